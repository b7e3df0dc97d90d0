module nuncio.dev/examples/go/bodyrewrite

go 1.23

require nuncio.dev/sdk/go v0.0.0

replace nuncio.dev/sdk/go => ../../../sdk/go
