package extproc_test

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerMap encodes headers as Envoy does by default: values in raw_value.
func headerMap(h map[string]string) *corev3.HeaderMap {
	hm := &corev3.HeaderMap{}
	for k, v := range h {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	return hm
}
