//! `${VAR}` and `${VAR:-default}` expansion, applied to every string of the config.

/// Expands `${VAR}` (an error when unset) and `${VAR:-default}` (default when unset or
/// empty). `$$` is a literal `$`; a `$` not followed by `{` or `$` is kept as is.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body
                .find('}')
                .ok_or_else(|| format!("unterminated \"${{\" in {text:?}"))?;
            out.push_str(&substitute(&body[..close], lookup)?);
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(format!("invalid variable reference \"${{{expr}}}\""));
    }
    match (
        lookup(name).filter(|v| !v.is_empty() || default.is_none()),
        default,
    ) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (write \"${{{name}:-default}}\" to allow that)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NODE_NAME" => Some("node-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expand_should_substitute_set_variables() {
        assert_eq!(
            expand("/nodes/${NODE_NAME}", &env).unwrap(),
            "/nodes/node-1"
        );
        assert_eq!(expand("${NODE_NAME:-x}", &env).unwrap(), "node-1");
    }

    #[test]
    fn expand_should_use_default_when_unset_or_empty() {
        assert_eq!(expand("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(expand("${MISSING:-a-b}", &env).unwrap(), "a-b");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
    }

    #[test]
    fn expand_should_keep_plain_dollars_and_unescape_double_dollars() {
        assert_eq!(
            expand("cost $5 and $$HOME", &env).unwrap(),
            "cost $5 and $HOME"
        );
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
    }

    #[test]
    fn expand_should_reject_unset_and_malformed_references() {
        assert!(expand("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(expand("${OPEN", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${bad-name}", &env)
            .unwrap_err()
            .contains("invalid variable"));
    }
}
