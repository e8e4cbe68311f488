package storage

import (
	"errors"
	"net/url"
	"strings"
)

// redacted replaces secret values in URLs.
const redacted = "REDACTED"

// secretParamWords mark query parameters whose values are secret: any
// parameter whose lower-cased name contains one of them is redacted
// (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, secret_key,
// access_key, password, ...).
var secretParamWords = []string{"secret", "token", "key", "signature", "sig", "credential", "password", "passwd", "auth", "session"}

// RedactedURL returns rawURL with its secrets replaced by "REDACTED": the
// password of any userinfo and the values of query parameters that look
// secret (names containing secret, token, key, signature, credential,
// password, auth or session). A URL that does not parse is reduced to its
// scheme, since anything after it might be a secret.
func RedactedURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if i := strings.Index(rawURL, "://"); i > 0 && isScheme(rawURL[:i]) {
			return rawURL[:i] + "://" + redacted
		}
		return redacted
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	if u.Fragment != "" {
		u.Fragment = redacted
		u.RawFragment = ""
	}
	return u.String()
}

// redactQuery redacts secret parameter values in a raw query, keeping the
// order and encoding of everything else.
func redactQuery(raw string) string {
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		if !hasValue {
			continue
		}
		if decoded, err := url.QueryUnescape(name); err == nil {
			name = decoded
		}
		if isSecretParam(name) {
			parts[i] = p[:strings.Index(p, "=")] + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

func isSecretParam(name string) bool {
	n := strings.ToLower(name)
	for _, w := range secretParamWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

func isScheme(s string) bool {
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// scrubURL removes every appearance of rawURL (and of its secret parts) from
// msg, for messages from libraries that quote the URL they were given.
func scrubURL(msg, rawURL string) string {
	if rawURL == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, rawURL, RedactedURL(rawURL))
	u, err := url.Parse(rawURL)
	if err != nil {
		return msg
	}
	var secrets []string
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			secrets = append(secrets, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}
	for name, values := range u.Query() {
		if !isSecretParam(name) {
			continue
		}
		for _, v := range values {
			if v != "" {
				secrets = append(secrets, v, url.QueryEscape(v))
			}
		}
	}
	for _, s := range secrets {
		// Replacing a one- or two-letter "secret" everywhere would garble
		// the message without protecting anything.
		if len(s) >= 3 {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	return msg
}

// redactURLError drops the URL that *url.Error quotes in its message.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
