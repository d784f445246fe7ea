package authtest

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// b64 is the JOSE base64url encoding, without padding (RFC 7515 §2).
var b64 = base64.RawURLEncoding

// joseHeader is the ID-token header. TWC's sample header is exactly
// {"alg":"RS256"}; kid appears only with Faults.IncludeKid.
type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
}

// idClaims are the ID-token claims, in the order of TWC's documented sample
// token. aud is a single string, not an array; there is no nonce, azp,
// auth_time or jti unless a fault adds a nonce.
type idClaims struct {
	Sub   string `json:"sub"`
	Aud   string `json:"aud"`
	Iss   string `json:"iss"`
	Exp   int64  `json:"exp"`
	Iat   int64  `json:"iat"`
	Nonce string `json:"nonce,omitempty"`
}

// jwk is one RSA public key in the JWKS (RFC 7517). The JWKS layout of TWC is
// not documented; this is the conventional one.
type jwk struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Kid string `json:"kid,omitempty"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func publicJWK(pub *rsa.PublicKey, kid string) jwk {
	return jwk{Kty: "RSA", Alg: "RS256", Use: "sig", Kid: kid, N: b64.EncodeToString(pub.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
}

// thumbprint is the RFC 7638 JWK thumbprint of pub, used as its kid so the
// kid changes exactly when the key does.
func thumbprint(pub *rsa.PublicKey) string {
	j := publicJWK(pub, "")
	canon := fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, j.E, j.N)
	sum := sha256.Sum256([]byte(canon))
	return b64.EncodeToString(sum[:])
}

// tokenSpec describes one ID token to mint, before faults are applied.
type tokenSpec struct {
	sub, aud string
	ttl      time.Duration
	// fromCode marks the authorization_code grant, the only one where a
	// nonce (from the authorize request) can appear.
	fromCode bool
	nonce    string
}

// mintIDToken issues an ID token the way the token endpoint does, with the
// faults f applied.
func (s *Server) mintIDToken(t tokenSpec, f Faults) string {
	now := s.now()
	c := idClaims{Sub: t.sub, Aud: t.aud, Iss: s.issuer, Exp: now.Add(t.ttl).Unix(), Iat: now.Unix()}
	if f.WrongIssuer {
		c.Iss += "-wrong"
	}
	if f.WrongAudience {
		c.Aud = "someone-else"
	}
	if f.Expired {
		c.Exp, c.Iat = now.Add(-time.Hour).Unix(), now.Add(-2*time.Hour).Unix()
	}
	switch {
	case !t.fromCode:
	case f.WrongNonce:
		c.Nonce = "wrong-" + t.nonce
	case f.EchoNonce:
		c.Nonce = t.nonce
	}
	key, kid := s.signingKey()
	h := joseHeader{Alg: "RS256"}
	if f.IncludeKid {
		h.Kid = kid
	}
	hb, _ := json.Marshal(h) // plain string fields: cannot fail
	cb, _ := json.Marshal(c)
	tok := signRS256(key, b64.EncodeToString(hb)+"."+b64.EncodeToString(javaSlashes(cb)))
	if f.BadSignature {
		tok = corruptSignature(tok)
	}
	return tok
}

// javaSlashes escapes "/" as `\/`, as the Java JSON serializer of TWC does in
// the documented sample token. It is only safe on JSON text, where "/" can
// only occur inside strings.
func javaSlashes(b []byte) []byte { return bytes.ReplaceAll(b, []byte("/"), []byte(`\/`)) }

func signRS256(key *rsa.PrivateKey, signingInput string) string {
	sum := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		// Only possible for a key too small for SHA-256, never for ours.
		return signingInput + "."
	}
	return signingInput + "." + b64.EncodeToString(sig)
}

// corruptSignature flips bits of the signature's first byte, keeping its
// length, so verifiers fail on the signature check rather than on parsing.
func corruptSignature(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	sig, err := b64.DecodeString(tok[i+1:])
	if err != nil || len(sig) == 0 {
		return tok + "AA"
	}
	sig[0] ^= 0xff
	return tok[:i+1] + b64.EncodeToString(sig)
}

// MintIDToken returns a valid RS256 ID token for sub and aud, issued now and
// expiring after ttl, exactly as the token endpoint would issue it. It honours
// Faults.IncludeKid and ignores every other fault.
func (s *Server) MintIDToken(sub, aud string, ttl time.Duration) string {
	return s.mintIDToken(tokenSpec{sub: sub, aud: aud, ttl: ttl}, Faults{IncludeKid: s.Faults().IncludeKid})
}

// SignJWT builds a JWT from arbitrary header and claims, for hostile-token
// tests. The signature follows header["alg"]:
//   - "none": an empty signature;
//   - "HS256": HMAC-SHA256 keyed with the PEM text of the server's public
//     key, the classic RS256/HS256 key-confusion attack;
//   - anything else, including "RS256" and a missing alg: RS256 with the
//     current key, so a header may lie about the algorithm.
//
// A nil header means {"alg":"RS256"}. Values that cannot be encoded as JSON
// yield "".
func (s *Server) SignJWT(header, claims map[string]any) string {
	if header == nil {
		header = map[string]any{"alg": "RS256"}
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return ""
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return ""
	}
	input := b64.EncodeToString(hb) + "." + b64.EncodeToString(cb)
	key, _ := s.signingKey()
	alg, _ := header["alg"].(string)
	switch alg {
	case "none":
		return input + "."
	case "HS256":
		mac := hmac.New(sha256.New, publicKeyPEM(&key.PublicKey))
		mac.Write([]byte(input))
		return input + "." + b64.EncodeToString(mac.Sum(nil))
	default:
		return signRS256(key, input)
	}
}

// publicKeyPEM is the PKIX PEM text of pub, the bytes a naive HS256 verifier
// would use as its secret when handed an RSA public key.
func publicKeyPEM(pub *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// verifyIDToken checks a token the way TWC REST would before accepting it:
// RS256 with the current key, this issuer, not expired. It returns the
// subject.
func (s *Server) verifyIDToken(tok string) (string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", errors.New("token is not a compact JWS")
	}
	var h joseHeader
	if err := decodeSegment(parts[0], &h); err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	if h.Alg != "RS256" {
		return "", fmt.Errorf("alg %q is not RS256", h.Alg)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	key, _ := s.signingKey()
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	var c idClaims
	if err := decodeSegment(parts[1], &c); err != nil {
		return "", fmt.Errorf("claims: %w", err)
	}
	switch {
	case c.Iss != s.issuer:
		return "", fmt.Errorf("iss %q is not %q", c.Iss, s.issuer)
	case !s.now().Before(time.Unix(c.Exp, 0)):
		return "", fmt.Errorf("expired at %v", time.Unix(c.Exp, 0).UTC())
	case c.Sub == "":
		return "", errors.New("no sub")
	}
	return c.Sub, nil
}

func decodeSegment(seg string, v any) error {
	b, err := b64.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
