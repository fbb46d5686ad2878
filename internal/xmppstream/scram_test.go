package xmppstream

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// The example exchanges of RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677
// section 3 (SCRAM-SHA-256): user "user", password "pencil", the RFCs'
// nonces. The client's messages must be the RFCs' bytes, carried in
// RFC 6120's <auth/> and <response/>, and the server's signature must be
// checked.
var scramVectors = []struct {
	mech                  string
	hash                  scram.HashGeneratorFcn
	clientNonce           string
	clientFirst           string
	serverFirst           string
	clientFinal           string
	serverFinal, wrongSig string
}{
	{"SCRAM-SHA-1", scram.SHA1, "fyko+d2lbbFgONRv9qkxdawL",
		"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
		"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
		"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", "v=rmF9pqV8S7suAoZWja4dJRkFsKA="},
	{"SCRAM-SHA-256", scram.SHA256, "rOprNGfwEbeRWgbNEkqO",
		"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
}

func TestSCRAMVectors(t *testing.T) {
	b64 := base64.StdEncoding
	for _, v := range scramVectors {
		for _, serverFinal := range []string{v.serverFinal, v.wrongSig} {
			name := v.mech
			if serverFinal == v.wrongSig {
				name += "/wrong server signature"
			}
			t.Run(name, func(t *testing.T) {
				c, p := pipeConn(t)
				client, err := v.hash.NewClient("user", "pencil", "")
				if err != nil {
					t.Fatal(err)
				}
				conv := client.WithNonceGenerator(func() string { return v.clientNonce }).NewConversation()
				done := make(chan error, 1)
				go func() { done <- scramExchange(c, v.mech, conv) }()

				auth := p.next()
				if !auth.Is(nsSASL, "auth") || auth.Attr("mechanism") != v.mech {
					t.Fatalf("sent %+v", auth)
				}
				if got, _ := b64.DecodeString(auth.Content); string(got) != v.clientFirst {
					t.Fatalf("client-first-message %q, want %q", got, v.clientFirst)
				}
				p.write("<challenge xmlns='%s'>%s</challenge>", nsSASL, b64.EncodeToString([]byte(v.serverFirst)))
				resp := p.next()
				if got, _ := b64.DecodeString(resp.Content); !resp.Is(nsSASL, "response") || string(got) != v.clientFinal {
					t.Fatalf("client-final-message %q, want %q", got, v.clientFinal)
				}
				p.write("<success xmlns='%s'>%s</success>", nsSASL, b64.EncodeToString([]byte(serverFinal)))
				err = <-done
				switch {
				case serverFinal == v.serverFinal && err != nil:
					t.Fatalf("RFC exchange refused: %v", err)
				case serverFinal != v.serverFinal && (err == nil || !strings.Contains(err.Error(), "signature")):
					t.Fatalf("wrong server signature: err %v", err)
				}
			})
		}
	}
}

// A server may not ask for more PBKDF2 rounds than maxIterations.
func TestSCRAMIterationBound(t *testing.T) {
	c, p := pipeConn(t)
	client, err := scram.SHA256.NewClient("user", "pencil", "")
	if err != nil {
		t.Fatal(err)
	}
	conv := client.WithNonceGenerator(func() string { return "abc" }).NewConversation()
	done := make(chan error, 1)
	go func() { done <- scramExchange(c, "SCRAM-SHA-256", conv) }()
	p.next()
	p.write("<challenge xmlns='%s'>%s</challenge>", nsSASL,
		base64.StdEncoding.EncodeToString([]byte("r=abcdef,s=QSXCR+Q6sek8bf92,i=100000000")))
	if err := <-done; err == nil || !strings.Contains(err.Error(), "iteration") {
		t.Fatalf("err %v", err)
	}
}
