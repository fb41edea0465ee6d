//! `${NAME}` expansion in manifest strings: `${NAME}`, `${NAME:-default}` (the default applies
//! when the variable is unset or empty) and `$$` for a literal `$`; a `$` followed by anything
//! else is kept as is. Pure text in, text out: the caller supplies the lookup (the environment
//! plus `${MANIFEST_DIR}`) and turns the error into a located problem.

/// Expands `${NAME}`, `${NAME:-default}` and `$$` in `s`.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                return Err(format!(
                    "unclosed `${{` in {s:?} (write `$$` for a literal `$`)"
                ));
            };
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{inner}}}` is not a variable reference (`${{NAME}}` or `${{NAME:-default}}`; `$$` is a literal `$`)"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (set it, or write `${{{name}:-default}}`)"
                    ))
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
