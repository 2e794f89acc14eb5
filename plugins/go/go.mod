module linecook.dev/plugins

go 1.24
