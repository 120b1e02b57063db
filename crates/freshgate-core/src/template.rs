//! Activity title templates: `Order {{properties.order_id}}` with the event's values.
//!
//! Parsed once (at configuration time), so a bad template is a configuration problem with its
//! key, never a delivery failure. Placeholders name a root and an optional dotted path:
//! `event`, `name`, `userId`, `anonymousId`, `messageId`, `properties.<path>`,
//! `context.<path>`. A path that the event lacks renders as the empty string (a title should
//! read naturally, and Freshworks needs no marker); when the whole title comes out blank the
//! call's own name is used, so a title is never empty. Rendering is total: any input gives a
//! string of at most [`MAX_TITLE_CHARS`] characters.

use serde_json::{Map, Value};

use crate::notes::display_value;

/// Longest title rendered, in characters (longer ones are cut and end in `…`).
pub const MAX_TITLE_CHARS: usize = 255;

/// What a placeholder reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    Event,
    Name,
    UserId,
    AnonymousId,
    MessageId,
    Properties,
    Context,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value { root: Root, path: Vec<String> },
}

/// A parsed title template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TitleTemplate {
    source: String,
    parts: Vec<Part>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without its `}}`.
    #[error("`{{{{` at character {0} is not closed by `}}}}`")]
    Unclosed(usize),
    /// `{{}}`.
    #[error("empty placeholder `{{{{}}}}` at character {0}")]
    Empty(usize),
    /// A root that is not one of the known ones.
    #[error(
        "unknown placeholder `{{{{{0}}}}}`; use event, name, userId, anonymousId, messageId, properties.<key> or context.<key>"
    )]
    UnknownRoot(String),
}

/// The values a title is rendered from (borrowed from the event).
#[derive(Debug, Clone, Copy)]
pub struct TemplateInput<'a> {
    /// track `event`.
    pub event: Option<&'a str>,
    /// page/screen `name`.
    pub name: Option<&'a str>,
    /// `userId`.
    pub user_id: Option<&'a str>,
    /// `anonymousId`.
    pub anonymous_id: Option<&'a str>,
    /// `messageId`.
    pub message_id: &'a str,
    /// `properties`.
    pub properties: &'a Map<String, Value>,
    /// `context`.
    pub context: &'a Map<String, Value>,
}

impl<'a> TemplateInput<'a> {
    /// The input of a stored event.
    #[must_use]
    pub fn of(event: &'a crate::segment::StoredEvent) -> Self {
        Self {
            event: event.event.as_deref(),
            name: event.name.as_deref(),
            user_id: event.user_id.as_deref(),
            anonymous_id: event.anonymous_id.as_deref(),
            message_id: &event.message_id,
            properties: &event.properties,
            context: &event.context,
        }
    }

    /// The call's own name: the event name of a track, the page name of a page or screen.
    #[must_use]
    pub fn call_name(&self) -> Option<&'a str> {
        self.event.or(self.name)
    }
}

impl TitleTemplate {
    /// Parse a template.
    ///
    /// # Errors
    /// [`TemplateError`] for an unclosed or empty placeholder or an unknown root.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let at = source[..offset + open].chars().count() + 1;
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(at))?;
            let inner = after[..close].trim();
            if inner.is_empty() {
                return Err(TemplateError::Empty(at));
            }
            let mut segments = inner.split('.').map(|s| s.trim().to_owned());
            let head = segments.next().unwrap_or_default();
            let path: Vec<String> = segments.collect();
            let root = match (head.as_str(), path.is_empty()) {
                ("event", true) => Root::Event,
                ("name", true) => Root::Name,
                ("userId", true) => Root::UserId,
                ("anonymousId", true) => Root::AnonymousId,
                ("messageId", true) => Root::MessageId,
                ("properties", false) => Root::Properties,
                ("context", false) => Root::Context,
                _ => return Err(TemplateError::UnknownRoot(inner.to_owned())),
            };
            if path.iter().any(String::is_empty) {
                return Err(TemplateError::UnknownRoot(inner.to_owned()));
            }
            parts.push(Part::Value { root, path });
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Render with an event's values. Never empty: a blank result falls back to the call's
    /// name, then to `"(unnamed)"`.
    #[must_use]
    pub fn render(&self, input: &TemplateInput<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value { root, path } => out.push_str(&lookup(input, root, path)),
            }
        }
        title_or_name(&out, input)
    }
}

/// The title of a call with no template: its name.
#[must_use]
pub fn default_title(input: &TemplateInput<'_>) -> String {
    title_or_name("", input)
}

fn title_or_name(rendered: &str, input: &TemplateInput<'_>) -> String {
    let rendered = collapse_whitespace(rendered);
    let title = if rendered.is_empty() {
        input
            .call_name()
            .map(collapse_whitespace)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "(unnamed)".to_owned())
    } else {
        rendered
    };
    crate::notes::truncate_chars(&title, MAX_TITLE_CHARS)
}

/// Titles are one line: newlines and runs of spaces become one space.
fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn lookup(input: &TemplateInput<'_>, root: &Root, path: &[String]) -> String {
    let text = |v: Option<&str>| v.unwrap_or_default().to_owned();
    match root {
        Root::Event => text(input.event),
        Root::Name => text(input.name),
        Root::UserId => text(input.user_id),
        Root::AnonymousId => text(input.anonymous_id),
        Root::MessageId => input.message_id.to_owned(),
        Root::Properties => walk(input.properties, path),
        Root::Context => walk(input.context, path),
    }
}

fn walk(map: &Map<String, Value>, path: &[String]) -> String {
    let Some((first, rest)) = path.split_first() else {
        return String::new();
    };
    let mut value = map.get(first.as_str());
    for key in rest {
        value = match value {
            Some(Value::Object(m)) => m.get(key.as_str()),
            Some(Value::Array(items)) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
    }
    value.map(display_value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn input<'a>(
        event: Option<&'a str>,
        properties: &'a Map<String, Value>,
        context: &'a Map<String, Value>,
    ) -> TemplateInput<'a> {
        TemplateInput {
            event,
            name: None,
            user_id: Some("u1"),
            anonymous_id: None,
            message_id: "m1",
            properties,
            context,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_paths_and_roots() {
        let props = obj(json!({"order_id": 42, "cart": {"total": 9.5, "items": ["a", "b"]}}));
        let ctx = obj(json!({"page": {"path": "/x"}}));
        let i = input(Some("Order Completed"), &props, &ctx);
        let t = TitleTemplate::parse(
            "Order {{properties.order_id}} ({{ event }}) {{properties.cart.total}} {{properties.cart.items}} {{properties.cart.items.1}} {{context.page.path}} by {{userId}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&i),
            "Order 42 (Order Completed) 9.5 a, b b /x by u1"
        );
    }

    #[test]
    fn a_missing_path_renders_empty_and_a_blank_title_falls_back_to_the_name() {
        let props = obj(json!({"x": null}));
        let ctx = Map::new();
        let i = input(Some("Signed Up"), &props, &ctx);
        let t = TitleTemplate::parse("Order {{properties.order_id}}").unwrap();
        assert_eq!(t.render(&i), "Order");
        let t = TitleTemplate::parse("{{properties.x}}{{properties.nope.deeper}}").unwrap();
        assert_eq!(t.render(&i), "Signed Up");
        assert_eq!(default_title(&input(None, &props, &ctx)), "(unnamed)");
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        assert_eq!(
            TitleTemplate::parse("Order {{properties.id").unwrap_err(),
            TemplateError::Unclosed(7)
        );
        assert_eq!(
            TitleTemplate::parse("a {{ }}").unwrap_err(),
            TemplateError::Empty(3)
        );
        for bad in [
            "{{traits.x}}",
            "{{properties}}",
            "{{event.x}}",
            "{{properties..x}}",
        ] {
            assert!(
                matches!(
                    TitleTemplate::parse(bad),
                    Err(TemplateError::UnknownRoot(_))
                ),
                "{bad}"
            );
        }
        assert!(
            TitleTemplate::parse("{{traits.x}}")
                .unwrap_err()
                .to_string()
                .contains("unknown placeholder `{{traits.x}}`")
        );
    }

    #[test]
    fn long_titles_are_cut() {
        let props = obj(json!({"x": "é".repeat(400)}));
        let ctx = Map::new();
        let t = TitleTemplate::parse("{{properties.x}}").unwrap();
        let out = t.render(&input(Some("E"), &props, &ctx));
        assert_eq!(out.chars().count(), MAX_TITLE_CHARS);
        assert!(out.ends_with('…'));
    }

    proptest! {
        #[test]
        fn parse_and_render_never_panic(source in ".{0,40}", key in ".{0,8}", value in ".{0,20}") {
            let props = obj(json!({ key.clone(): value }));
            let ctx = Map::new();
            if let Ok(t) = TitleTemplate::parse(&source) {
                let out = t.render(&input(Some("E"), &props, &ctx));
                prop_assert!(!out.is_empty());
                prop_assert!(out.chars().count() <= MAX_TITLE_CHARS);
            }
        }

        #[test]
        fn text_without_braces_renders_as_itself(source in "[a-zA-Z0-9 ]{1,40}") {
            let props = Map::new();
            let ctx = Map::new();
            let t = TitleTemplate::parse(&source).unwrap();
            let expected = source.split_whitespace().collect::<Vec<_>>().join(" ");
            let expected = if expected.is_empty() { "E".to_owned() } else { expected };
            prop_assert_eq!(t.render(&input(Some("E"), &props, &ctx)), expected);
        }
    }
}
