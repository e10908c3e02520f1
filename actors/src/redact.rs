//! Keeps secrets out of everything Hestia prints, stores or returns: URLs lose their password and
//! query values.

/// `scheme://user:secret@host/p?token=abc` → `scheme://user:***@host/p?token=***`.
///
/// Works on templates that are not valid URLs yet (`http://{address}:8080`), so it is string-based.
pub fn redact_url(raw: &str) -> String {
    let (base, query) = match raw.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (raw, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    if userinfo.contains(':') {
                        format!("{scheme}://{user}:***@{host}{path}")
                    } else {
                        format!("{scheme}://***@{host}{path}")
                    }
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn plain_urls_and_templates_are_kept() {
        assert_eq!(
            redact_url("http://{address}:8080/v1"),
            "http://{address}:8080/v1"
        );
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
    }

    #[test]
    fn passwords_and_query_values_are_masked() {
        assert_eq!(
            redact_url("https://bob:hunter2@example.org/hook?token=abc&x"),
            "https://bob:***@example.org/hook?token=***&x"
        );
        assert_eq!(
            redact_url("https://tok@example.org"),
            "https://***@example.org"
        );
    }
}
