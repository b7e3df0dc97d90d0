package abi

/*
#include "host.h"
*/
import "C"

func setHost(host *C.nuncio_host_v1) int32 {
	return int32(C.nuncio_sdk_set_host(host))
}
