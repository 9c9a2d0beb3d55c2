//! Topic and key templates: `k8s-{{namespace}}`, `{{pod}}`. `{{…}}` cannot be confused
//! with the config's `${ENV}` expansion (which runs first, at load, and leaves it alone).
//! The variables are the record's metadata: `node`, `namespace`, `pod`, `container`
//! (from a container log's path), `stream` (per record: keys only) and
//! `fields.<name>` (the declaration's static fields). Unknown variables are refused when
//! the declaration is loaded.

use std::collections::BTreeMap;
use std::fmt;

/// One variable of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Var {
    Node,
    Namespace,
    Pod,
    Container,
    Stream,
    Field(String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Node => f.write_str("node"),
            Var::Namespace => f.write_str("namespace"),
            Var::Pod => f.write_str("pod"),
            Var::Container => f.write_str("container"),
            Var::Stream => f.write_str("stream"),
            Var::Field(name) => write!(f, "fields.{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template: text and variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Template {
    parts: Vec<Part>,
}

/// A container log's names, from its path.
#[derive(Debug, Clone, Copy)]
pub struct Pod<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
}

/// What a template is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub node: &'a str,
    pub pod: Option<Pod<'a>>,
    pub stream: Option<&'a str>,
    pub fields: &'a BTreeMap<String, String>,
}

/// Whether `text` holds a template variable (`{{`).
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

impl Template {
    /// Parses `text`; an error says what is wrong (an unclosed `{{`, an unknown or empty
    /// variable, a stray `}}`).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let before = &rest[..open];
            if before.contains("}}") {
                return Err(format!("{text:?}: \"}}}}\" without an opening \"{{{{\""));
            }
            if !before.is_empty() {
                parts.push(Part::Text(before.to_string()));
            }
            let body = &rest[open + 2..];
            let close = body
                .find("}}")
                .ok_or_else(|| format!("{text:?}: \"{{{{\" is not closed by \"}}}}\""))?;
            parts.push(Part::Var(variable(body[..close].trim(), text)?));
            rest = &body[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("{text:?}: \"}}}}\" without an opening \"{{{{\""));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The variables it uses, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(var) => Some(var),
            Part::Text(_) => None,
        })
    }

    /// Renders it; `Err` names the first variable `context` has no value for (a path
    /// that is not a container log has no namespace, pod or container; a record of a
    /// plain file has no stream).
    pub fn render(&self, context: &Context<'_>) -> Result<String, Var> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => out.push_str(value(var, context).ok_or_else(|| var.clone())?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    /// The template as written (normalised: `{{ pod }}` shows as `{{pod}}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(text)?,
                Part::Var(var) => write!(f, "{{{{{var}}}}}")?,
            }
        }
        Ok(())
    }
}

impl Template {
    /// Renders what `context` has a value for and leaves the rest as `{{name}}`: what
    /// `logcatch check` shows of a key that depends on the record.
    pub fn render_partial(&self, context: &Context<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => match value(var, context) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&format!("{{{{{var}}}}}")),
                },
            }
        }
        out
    }
}

fn variable(name: &str, text: &str) -> Result<Var, String> {
    let var = match name {
        "node" => Var::Node,
        "namespace" => Var::Namespace,
        "pod" => Var::Pod,
        "container" => Var::Container,
        "stream" => Var::Stream,
        _ => match name.strip_prefix("fields.") {
            Some(field) if !field.is_empty() => Var::Field(field.to_string()),
            _ => {
                return Err(format!(
                    "{text:?}: unknown variable {{{{{name}}}}}; known: node, namespace, pod, container, stream, fields.<name>"
                ))
            }
        },
    };
    Ok(var)
}

fn value<'a>(var: &Var, context: &Context<'a>) -> Option<&'a str> {
    match var {
        Var::Node => Some(context.node),
        Var::Namespace => context.pod.map(|p| p.namespace),
        Var::Pod => context.pod.map(|p| p.pod),
        Var::Container => context.pod.map(|p| p.container),
        Var::Stream => context.stream,
        Var::Field(name) => context.fields.get(name).map(String::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod<'static> {
        Pod {
            namespace: "shop",
            pod: "cart-7d9",
            container: "app",
        }
    }

    #[test]
    fn render_should_fill_every_variable_from_the_context() {
        let fields = BTreeMap::from([("cluster".to_string(), "eu1".to_string())]);
        let context = Context {
            node: "n1",
            pod: Some(pod()),
            stream: Some("stderr"),
            fields: &fields,
        };
        let render = |text: &str| Template::parse(text).unwrap().render(&context);
        assert_eq!(
            render("k8s-{{namespace}}.{{ pod }}/{{container}}@{{node}}").unwrap(),
            "k8s-shop.cart-7d9/app@n1"
        );
        assert_eq!(
            render("{{fields.cluster}}-{{stream}}").unwrap(),
            "eu1-stderr"
        );
        assert_eq!(render("plain").unwrap(), "plain");
        assert_eq!(render("{{fields.zone}}"), Err(Var::Field("zone".into())));
    }

    #[test]
    fn render_should_name_the_variable_a_plain_file_has_no_value_for() {
        let fields = BTreeMap::new();
        let context = Context {
            node: "n1",
            pod: None,
            stream: None,
            fields: &fields,
        };
        let render = |text: &str| Template::parse(text).unwrap().render(&context);
        assert_eq!(render("logs-{{namespace}}"), Err(Var::Namespace));
        assert_eq!(render("{{stream}}"), Err(Var::Stream));
        assert_eq!(render("{{node}}").unwrap(), "n1");
        let partial = Template::parse("{{ node }}-{{stream}}").unwrap();
        assert_eq!(partial.render_partial(&context), "n1-{{stream}}");
        assert_eq!(partial.to_string(), "{{node}}-{{stream}}");
    }

    #[test]
    fn parse_should_refuse_unknown_variables_and_unbalanced_braces() {
        for (text, want) in [
            ("k8s-{{namespaces}}", "unknown variable {{namespaces}}"),
            ("{{}}", "unknown variable {{}}"),
            ("{{fields.}}", "unknown variable {{fields.}}"),
            ("a-{{pod", "is not closed"),
            ("a}}b", "without an opening"),
            ("{{pod}}}}", "without an opening"),
        ] {
            let error = Template::parse(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
        assert!(is_template("k8s-{{pod}}") && !is_template("k8s-${POD}"));
    }
}
