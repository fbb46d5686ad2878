// Package packaging builds busylamp's Debian package: the binary, the
// systemd unit and sysusers.d file of examples/systemd, the example
// config as a conffile, the man page, the copyright file and the
// maintainer scripts, put together with nfpm (no dpkg tools needed).
//
// The inputs are files of this repository (packaging/ and
// examples/systemd/), read at build time from Options.Root; mkdeb is the
// command `make deb` runs.
package packaging

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// Name is the Debian package's name.
const Name = "busylamp"

// Maintainer is the package's Maintainer field.
const Maintainer = "busylamp developers <busylamp@localhost>"

// Options says what to package and where to write it.
type Options struct {
	// Root is the repository's top directory (it holds packaging/ and
	// examples/systemd/).
	Root string
	// Binary is the busylamp binary, built for Arch.
	Binary string
	// Version is `git describe` output or a Debian version already; see
	// DebianVersion.
	Version string
	// Arch is the Go architecture (GOARCH) the binary was built for.
	Arch string
	// OutDir is where busylamp_<version>_<arch>.deb is written.
	OutDir string
	// MTime stamps every file of the package; zero means
	// $SOURCE_DATE_EPOCH, else now (nfpm's rule).
	MTime time.Time
}

// Installed paths.
const (
	PathBinary   = "/usr/bin/busylamp"
	PathUnit     = "/lib/systemd/system/busylamp.service"
	PathSysusers = "/usr/lib/sysusers.d/busylamp.conf"
	PathConfig   = "/etc/busylamp/busylamp.conf"
	PathMan      = "/usr/share/man/man1/busylamp.1.gz"
	PathDoc      = "/usr/share/doc/busylamp/copyright"
)

const description = `share PBX busy-lamp states and MWI counts over XMPP PubSub
busylamp runs beside each PBX node of a cluster: it publishes the node's
own device (busy-lamp) states and message-waiting counts to XMPP PubSub,
hears every other node's, merges them into one cluster-wide state per
device and per mailbox, and serves that on a local AMI-style socket.
It interoperates with Asterisk's res_xmpp distributed device state.`

// debianArch maps GOARCH to Debian's architecture names where they differ.
var debianArch = map[string]string{
	"386":      "i386",
	"arm":      "armhf",
	"mips64le": "mips64el",
	"mipsle":   "mipsel",
	"ppc64le":  "ppc64el",
}

// DebianArch is Debian's name of the Go architecture goarch.
func DebianArch(goarch string) string {
	if a, ok := debianArch[goarch]; ok {
		return a
	}
	return goarch
}

// FileName is the package file's conventional name:
// busylamp_<version>_<arch>.deb, with version already a Debian version.
func FileName(version, goarch string) string {
	return fmt.Sprintf("%s_%s_%s.deb", Name, version, DebianArch(goarch))
}

// Build writes the .deb and returns its path.
func Build(o Options) (string, error) {
	if o.Binary == "" || o.Arch == "" || o.OutDir == "" {
		return "", errors.New("packaging: Binary, Arch and OutDir are required")
	}
	version, err := DebianVersion(o.Version)
	if err != nil {
		return "", err
	}
	root := o.Root
	if root == "" {
		root = "."
	}
	src := func(rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }

	tmp, err := os.MkdirTemp("", "busylamp-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	man := filepath.Join(tmp, "busylamp.1.gz")
	if err := gzipFile(src("packaging/busylamp.1"), man); err != nil {
		return "", err
	}

	depends, err := libcDepends(o.Binary)
	if err != nil {
		return "", err
	}
	file := func(source, dest string, mode os.FileMode) *files.Content {
		return &files.Content{Source: source, Destination: dest,
			FileInfo: &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root"}}
	}
	conf := file(src("packaging/busylamp.conf"), PathConfig, 0o640)
	conf.Type = files.TypeConfig // a conffile: dpkg keeps the admin's edits
	info := &nfpm.Info{
		Name:          Name,
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none", // version is Debian's already: no semver split
		Section:       "net",
		Priority:      "optional",
		Maintainer:    Maintainer,
		Description:   description,
		Homepage:      "https://github.com/busylamp/busylamp",
		License:       "none stated",
		MTime:         o.MTime,
		Overridables: nfpm.Overridables{
			Depends: depends,
			Contents: files.Contents{
				file(o.Binary, PathBinary, 0o755),
				file(src("examples/systemd/busylamp.service"), PathUnit, 0o644),
				file(src("examples/systemd/busylamp.sysusers"), PathSysusers, 0o644),
				conf,
				file(man, PathMan, 0o644),
				file(src("packaging/copyright"), PathDoc, 0o644),
			},
			Scripts: nfpm.Scripts{
				PostInstall: src("packaging/scripts/postinst"),
				PreRemove:   src("packaging/scripts/prerm"),
				PostRemove:  src("packaging/scripts/postrm"),
			},
			Deb: nfpm.Deb{Arch: DebianArch(o.Arch)},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", fmt.Errorf("packaging: %w", err)
	}

	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(o.OutDir, FileName(version, o.Arch))
	var buf bytes.Buffer
	if err := deb.Default.Package(info, &buf); err != nil {
		return "", fmt.Errorf("packaging: build %s: %w", out, err)
	}
	// Written whole or not at all: a failed build leaves no half .deb.
	part := out + ".part"
	if err := os.WriteFile(part, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(part, out); err != nil {
		os.Remove(part)
		return "", err
	}
	return out, nil
}

// gzipFile compresses src to dst as Debian wants man pages: best
// compression, no name or time in the header (gzip -9n), so the same
// page gives the same bytes.
func gzipFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

// libcDepends is the package's Depends: libc6 when the binary is linked
// against the C library (a cgo build, the default where a C compiler
// exists), nothing for a static one.
func libcDepends(binary string) ([]string, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("packaging: %s: %w", binary, err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("packaging: %s: %w", binary, err)
	}
	if slices.ContainsFunc(libs, func(l string) bool { return l == "libc.so.6" }) {
		return []string{"libc6"}, nil
	}
	return nil, nil
}
