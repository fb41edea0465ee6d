//! `nanofaas token create`: a new random API token, shown once, and the configuration that
//! lets the control plane recognise it (only its SHA-256 is ever configured).

use crate::exit::{err, Exit};
use crate::output::Format;
use nanofaas_control_plane::access::{self, check_pattern, Role};
use nanofaas_control_plane::config::TokenConfig;

/// A new token and its configuration entry.
pub fn create(role: &str, functions: &[String]) -> anyhow::Result<(String, TokenConfig)> {
    let r = Role::parse(role).ok_or_else(|| {
        err(
            Exit::Usage,
            format!("--role {role:?}: must be one of admin, deployer, invoker, viewer"),
        )
    })?;
    let functions: Vec<String> = functions
        .iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if !functions.is_empty() && r != Role::Invoker {
        return Err(err(
            Exit::Usage,
            "--functions restricts invoker tokens only (other roles apply to every function)",
        ));
    }
    for f in &functions {
        check_pattern(f).map_err(|e| err(Exit::Usage, format!("--functions: {e}")))?;
    }
    let token = access::new_token().map_err(|e| err(Exit::Failure, e))?;
    let cfg = TokenConfig {
        role: r.as_str().to_string(),
        sha256: access::hex(&access::hash_token(&token)),
        functions,
    };
    Ok((token, cfg))
}

/// The TOML line of the `[api]` section.
pub fn toml_line(cfg: &TokenConfig) -> String {
    let mut s = format!("{{ role = \"{}\", sha256 = \"{}\"", cfg.role, cfg.sha256);
    if !cfg.functions.is_empty() {
        let list: Vec<String> = cfg.functions.iter().map(|f| format!("\"{f}\"")).collect();
        s.push_str(&format!(", functions = [{}]", list.join(", ")));
    }
    s.push_str(" }");
    s
}

pub fn cmd_create(format: Format, role: &str, functions: &[String]) -> anyhow::Result<()> {
    let (token, cfg) = create(role, functions)?;
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "token": token,
                "role": cfg.role,
                "functions": cfg.functions,
                "sha256": cfg.sha256,
                "toml": toml_line(&cfg),
                "entry": cfg.entry(),
            });
            println!("{v}");
        }
        Format::Table => {
            println!("{token}");
            eprintln!(
                "\nThat is the token (role {}); it is shown only now: keep it secret, give it to its user \
(the CLI reads NANOFAAS_TOKEN or --token).\n\nConfigure the control plane with its hash, in the config file:\n\n  [api]\n  tokens = [\n    {},\n  ]\n\nor as one entry of NANOFAAS_API_TOKENS (entries separated by spaces):\n\n  {}\n",
                cfg.role,
                toml_line(&cfg),
                cfg.entry()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanofaas_control_plane::config::ApiConfig;

    #[test]
    fn a_created_token_is_recognised_by_its_configuration() {
        let (token, cfg) = create("invoker", &["orders-*".into()]).unwrap();
        assert!(token.starts_with("nf_") && token.len() == 3 + 64, "{token}");
        let (other, _) = create("invoker", &[]).unwrap();
        assert_ne!(token, other);
        // The TOML line and the entry both configure it.
        let toml_cfg: ApiConfig =
            toml::from_str(&format!("tokens = [{}]", toml_line(&cfg))).unwrap();
        let entry = TokenConfig::parse_entry(&cfg.entry()).unwrap();
        assert_eq!(toml_cfg.tokens[0], cfg);
        assert_eq!(entry, cfg);
        let a = access::Access::from_config(&toml_cfg).unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let who = a.authenticate(&h).unwrap().unwrap();
        assert_eq!(who.role, Role::Invoker);
        assert_eq!(who.functions, vec!["orders-*"]);
        assert!(create("root", &[]).is_err());
        assert!(create("admin", &["x".into()]).is_err());
        assert!(create("invoker", &["a/b".into()]).is_err());
    }
}
