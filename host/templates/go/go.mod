module {{name}}

// //go:wasmexport and -buildmode=c-shared for wasip1 need Go 1.24.
go 1.24
