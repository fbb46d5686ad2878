package config

import "os"

// The places Locate looks, after the -c flag.
const (
	EnvConfig    = "BUSYLAMP_CONFIG"
	LocalConfig  = "busylamp.conf"
	SystemConfig = "/etc/busylamp/busylamp.conf"
)

// Locate returns the config file to read: flag (the -c value) when set,
// else $BUSYLAMP_CONFIG when set, else ./busylamp.conf when it exists, else
// /etc/busylamp/busylamp.conf (whether it exists or not, so that the error
// names it).
func Locate(flag string) string {
	return locate(flag, os.Getenv, func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
}

func locate(flag string, getenv func(string) string, exists func(string) bool) string {
	switch {
	case flag != "":
		return flag
	case getenv(EnvConfig) != "":
		return getenv(EnvConfig)
	case exists(LocalConfig):
		return LocalConfig
	}
	return SystemConfig
}
