//! Secrets masked out of a stream's config before the API shows it.

/// A stream's config for the API: the values of keys that name secrets (an SRT `passphrase`, a
/// `password`, a `token`, a `secret`, a `key`) and a URL's user info are masked.
pub(crate) fn masked(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    let secret = ["passphrase", "password", "secret", "token", "key"]
                        .iter()
                        .any(|s| k.contains(s));
                    if secret && !x.is_object() {
                        *x = "***".into();
                    } else {
                        walk(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::String(s) => {
                // `scheme://user:pass@host` → `scheme://***@host`; query values named like secrets.
                if let Some(at) = s.find('@').filter(|&at| s[..at].contains("://")) {
                    let scheme_end = s.find("://").map_or(0, |i| i + 3);
                    if scheme_end < at {
                        *s = format!("{}***{}", &s[..scheme_end], &s[at..]);
                    }
                }
                for name in ["passphrase=", "password=", "token=", "secret="] {
                    if let Some(i) = s.find(name) {
                        let start = i + name.len();
                        let end = s[start..].find('&').map_or(s.len(), |j| start + j);
                        s.replace_range(start..end, "***");
                    }
                }
            }
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_in_a_streams_config_are_masked() {
        let v = masked(json!({
            "id": "a",
            "url": "srt://user:hunter2@origin:9000?mode=caller&passphrase=s3cret&latency=200",
            "options": {"passphrase": "s3cret", "rtsp_transport": "tcp"},
            "tier": "keyframes",
        }));
        let text = v.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(
            v["url"],
            "srt://***@origin:9000?mode=caller&passphrase=***&latency=200"
        );
        assert_eq!(v["options"]["rtsp_transport"], "tcp");
        assert_eq!(v["tier"], "keyframes");
    }
}
