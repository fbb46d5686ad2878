module github.com/busylamp/busylamp

go 1.26.8

require (
	github.com/spf13/cobra v1.10.2
	gopkg.in/ini.v1 v1.67.3
	gosrc.io/xmpp v0.5.1
)

require (
	github.com/google/go-cmp v0.6.0 // indirect
	github.com/google/uuid v1.1.2 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
)
