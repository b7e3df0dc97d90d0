module nuncio.dev/sdk/go

go 1.23
