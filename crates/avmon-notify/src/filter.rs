//! Which events a notifier takes.

use avmon_core::{Alert, Severity};

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (`video.*`,
/// `news-*`, `*`); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut tail) = text.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().expect("split yields at least one part");
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// A notifier's filter: streams and kinds (globs; empty takes all) and a minimum severity.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub streams: Vec<String>,
    pub kinds: Vec<String>,
    pub min_severity: Option<Severity>,
}

impl Filter {
    pub fn takes(&self, a: &Alert) -> bool {
        let any = |patterns: &[String], s: &str| {
            patterns.is_empty() || patterns.iter().any(|p| glob_match(p, s))
        };
        any(&self.streams, a.stream_id.as_str())
            && any(&self.kinds, &a.kind)
            && !matches!(self.min_severity, Some(m) if a.severity < m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("video.*", "video.black", true),
            ("video.*", "audio.silence", false),
            ("video.*", "video.", true),
            ("*", "anything", true),
            ("source.down", "source.down", true),
            ("source.down", "source.downx", false),
            ("news-*-hd", "news-1-hd", true),
            ("news-*-hd", "news-1-sd", false),
            ("*.loss", "audio.loss", true),
            ("a*a", "a", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }
}
