//! Job inputs (`inputs` in the payload) and their interpolation, `${{ job.inputs.name }}`, into
//! the step scripts, image, services, artifacts and cache before the build starts
//! (`FF_ENABLE_JOB_INPUTS_INTERPOLATION`, on by default).
//!
//! Upstream evaluates these templates with its expression language; this implements the part
//! job payloads use: `job.inputs.<name>` with `.field` and `[index]` / `["key"]` access, string
//! and number literals, and `str(...)`. Anything else inside `${{ }}` fails the job with
//! `runner_configuration_error`, as an upstream evaluation error does.

use serde_json::Value;

use crate::job::JobResponse;

/// Why inputs could not be read or interpolated; shown as the job's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// An `inputs` entry is malformed: no key, a null value, an unknown type, or content
    /// that is not of the announced type.
    #[error("{0}")]
    Invalid(String),
    /// An expression names what does not exist or cannot be used so: an unknown input,
    /// attribute or function, an index out of range.
    #[error("failed to interpolate job inputs: {0}")]
    Interpolation(String),
    /// The text inside `${{ }}` is not an expression this parser reads. The parse error is
    /// part of this message (not a `source`), as the job's error is this text alone.
    #[error("failed to interpolate job inputs: {0}")]
    Parse(ParseError),
    /// An expression reads a `sensitive` input, which may not be interpolated.
    #[error("sensitive inputs are unsupported in interpolations yet")]
    Sensitive,
}

/// Why the text inside `${{ }}` could not be parsed as an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text ends before the expression (or before its closing `}}`).
    #[error("unterminated ${{{{ expression")]
    Unterminated,
    /// `.` is not followed by a name.
    #[error("expected a name after \".\"")]
    NameAfterDot,
    /// An index `[` is not closed by `]`.
    #[error("expected \"]\"")]
    UnclosedIndex,
    /// A string literal has no closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// Digits and dots that do not form a number.
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    /// A character that cannot start an expression.
    #[error("unexpected {0:?} in expression")]
    Unexpected(char),
    /// A complete expression is followed by something other than `}}`.
    #[error("unexpected {0:?} in expression, expected \"}}}}\"")]
    UnexpectedAfterExpression(char),
    /// A function's argument is not followed by `)`.
    #[error("expected \")\" after the argument of {function}")]
    UnclosedCall {
        /// The function's name.
        function: String,
    },
}

#[derive(Debug, Clone)]
struct Input {
    key: String,
    content: Value,
    sensitive: bool,
}

/// The job's inputs, validated.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    inputs: Vec<Input>,
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Inputs {
    /// Validates each `{key, value: {type, content, sensitive}}` with upstream's messages.
    pub fn new(raw: &[Value]) -> Result<Self, InputError> {
        let mut inputs = Vec::new();
        for item in raw {
            let key = item["key"].as_str().unwrap_or("");
            if key.is_empty() {
                return Err(InputError::Invalid("input without key".into()));
            }
            let value = &item["value"];
            let content = &value["content"];
            if content.is_null() {
                return Err(InputError::Invalid(format!(
                    "input {key:?} is null, must have valid value"
                )));
            }
            let announced = value["type"].as_str().unwrap_or("");
            let kind = match announced {
                "string" => "string",
                "number" => "number",
                "boolean" => "bool",
                "array" => "array",
                "struct" => "object",
                _ => {
                    return Err(InputError::Invalid(format!(
                        "invalid type {announced:?} for input {key:?}: type is unknown"
                    )))
                }
            };
            if kind != kind_name(content) {
                return Err(InputError::Invalid(format!(
                    "mismatching type of input {key:?}. Announced {kind:?}, but got {:?}",
                    kind_name(content)
                )));
            }
            inputs.push(Input {
                key: key.to_string(),
                content: content.clone(),
                sensitive: value["sensitive"].as_bool().unwrap_or(false),
            });
        }
        Ok(Self { inputs })
    }

    /// Replaces every `${{ expression }}` in `text`. Without inputs the text is left alone, so
    /// jobs that happen to contain the syntax keep working (as upstream).
    pub fn expand(&self, text: &str) -> Result<String, InputError> {
        if self.inputs.is_empty() || !text.contains("${{") {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let body = &rest[start + 3..];
            let mut parser = Parser {
                text: body,
                position: 0,
            };
            let expression = parser.expression().map_err(InputError::Parse)?;
            parser.skip_spaces();
            if !parser.rest().starts_with("}}") {
                return Err(InputError::Parse(match parser.rest().chars().next() {
                    Some(c) => ParseError::UnexpectedAfterExpression(c),
                    None => ParseError::Unterminated,
                }));
            }
            let (value, sensitive) = self.evaluate(&expression)?;
            if sensitive {
                return Err(InputError::Sensitive);
            }
            out.push_str(&render(&value));
            rest = &body[parser.position + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn evaluate(&self, expression: &Expression) -> Result<(Value, bool), InputError> {
        let error = |message: String| InputError::Interpolation(message);
        match expression {
            Expression::Literal(value) => Ok((value.clone(), false)),
            Expression::Identifier(name) if name == "job" => Ok((Value::Null, false)),
            Expression::Identifier(name) => Err(error(format!("unknown name {name:?}"))),
            Expression::Call(name, argument) => {
                let (value, sensitive) = self.evaluate(argument)?;
                match name.as_str() {
                    "str" => Ok((Value::String(render(&value)), sensitive)),
                    other => Err(error(format!("unknown function {other:?}"))),
                }
            }
            Expression::Attribute(target, name) => {
                if let Expression::Identifier(root) = target.as_ref() {
                    if root == "job" {
                        return if name == "inputs" {
                            Ok((Value::Null, false))
                        } else {
                            Err(error(format!("job has no attribute {name:?}")))
                        };
                    }
                }
                if is_inputs(target) {
                    let input = self
                        .inputs
                        .iter()
                        .find(|input| &input.key == name)
                        .ok_or_else(|| error(format!("job.inputs has no input {name:?}")))?;
                    return Ok((input.content.clone(), input.sensitive));
                }
                let (value, sensitive) = self.evaluate(target)?;
                match value.get(name) {
                    Some(field) => Ok((field.clone(), sensitive)),
                    None => Err(error(format!(
                        "{} has no attribute {name:?}",
                        kind_name(&value)
                    ))),
                }
            }
            Expression::Index(target, index) => {
                let (key, key_sensitive) = self.evaluate(index)?;
                if is_inputs(target) {
                    let name = key
                        .as_str()
                        .ok_or_else(|| error("job.inputs requires a string key".to_string()))?;
                    let attribute = Expression::Attribute(target.clone(), name.to_string());
                    return self.evaluate(&attribute);
                }
                let (value, sensitive) = self.evaluate(target)?;
                let found = match (&value, &key) {
                    (Value::Array(items), Value::Number(number)) => number
                        .as_u64()
                        .and_then(|index| items.get(index as usize))
                        .ok_or_else(|| error(format!("index {number} out of range"))),
                    (Value::Object(fields), Value::String(name)) => fields
                        .get(name)
                        .ok_or_else(|| error(format!("object has no attribute {name:?}"))),
                    _ => Err(error(format!(
                        "cannot index {} with {}",
                        kind_name(&value),
                        kind_name(&key)
                    ))),
                }?;
                Ok((found.clone(), sensitive || key_sensitive))
            }
        }
    }
}

fn is_inputs(expression: &Expression) -> bool {
    matches!(expression, Expression::Attribute(target, name)
        if name == "inputs" && matches!(target.as_ref(), Expression::Identifier(root) if root == "job"))
}

fn render(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Expression {
    Literal(Value),
    Identifier(String),
    Attribute(Box<Expression>, String),
    Index(Box<Expression>, Box<Expression>),
    Call(String, Box<Expression>),
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.position..]
    }

    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start();
        self.position = self.text.len() - trimmed.len();
    }

    fn identifier(&mut self) -> Option<String> {
        let rest = self.rest();
        let length = rest
            .char_indices()
            .find(|(index, c)| {
                !(c.is_ascii_alphanumeric() || *c == '_' || (*index > 0 && *c == '-'))
            })
            .map(|(index, _)| index)
            .unwrap_or(rest.len());
        if length == 0 || rest.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        let name = rest[..length].to_string();
        self.position += length;
        Some(name)
    }

    fn expression(&mut self) -> Result<Expression, ParseError> {
        self.skip_spaces();
        let mut expression = self.primary()?;
        loop {
            self.skip_spaces();
            if self.rest().starts_with('.') {
                self.position += 1;
                let name = self.identifier().ok_or(ParseError::NameAfterDot)?;
                expression = Expression::Attribute(Box::new(expression), name);
            } else if self.rest().starts_with('[') {
                self.position += 1;
                let index = self.expression()?;
                self.skip_spaces();
                if !self.rest().starts_with(']') {
                    return Err(ParseError::UnclosedIndex);
                }
                self.position += 1;
                expression = Expression::Index(Box::new(expression), Box::new(index));
            } else {
                return Ok(expression);
            }
        }
    }

    fn primary(&mut self) -> Result<Expression, ParseError> {
        let rest = self.rest();
        let Some(first) = rest.chars().next() else {
            return Err(ParseError::Unterminated);
        };
        if first == '"' || first == '\'' {
            let body = &rest[1..];
            let end = body.find(first).ok_or(ParseError::UnterminatedString)?;
            let text = body[..end].to_string();
            self.position += end + 2;
            return Ok(Expression::Literal(Value::String(text)));
        }
        if first.is_ascii_digit() {
            let length = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let literal = &rest[..length];
            let number: serde_json::Number = literal
                .parse()
                .map_err(|_| ParseError::InvalidNumber(literal.to_string()))?;
            self.position += length;
            return Ok(Expression::Literal(Value::Number(number)));
        }
        let name = self.identifier().ok_or(ParseError::Unexpected(first))?;
        self.skip_spaces();
        if self.rest().starts_with('(') {
            self.position += 1;
            let argument = self.expression()?;
            self.skip_spaces();
            if !self.rest().starts_with(')') {
                return Err(ParseError::UnclosedCall { function: name });
            }
            self.position += 1;
            return Ok(Expression::Call(name, Box::new(argument)));
        }
        Ok(Expression::Identifier(name))
    }
}

fn expand_all(inputs: &Inputs, texts: &mut [String]) -> Result<(), InputError> {
    for text in texts {
        *text = inputs.expand(text)?;
    }
    Ok(())
}

fn expand_image(inputs: &Inputs, image: &mut crate::job::Image) -> Result<(), InputError> {
    image.name = inputs.expand(&image.name)?;
    expand_all(inputs, &mut image.command)?;
    expand_all(inputs, &mut image.entrypoint)?;
    expand_all(inputs, &mut image.pull_policy)?;
    for (section, key) in [
        ("docker", "platform"),
        ("docker", "user"),
        ("kubernetes", "user"),
    ] {
        if let Some(Value::String(text)) = image
            .executor_opts
            .get_mut(section)
            .and_then(|options| options.get_mut(key))
        {
            *text = inputs.expand(text)?;
        }
    }
    Ok(())
}

/// Interpolates the job's inputs into the fields upstream expands: step scripts, image and
/// services (name, command, entrypoint, pull policy, executor options), artifacts (name, paths,
/// exclude, when, expire_in) and caches (key, policy, paths, when, fallback keys).
pub fn expand_job(job: &mut JobResponse) -> Result<(), InputError> {
    let inputs = Inputs::new(&job.inputs)?;
    if inputs.inputs.is_empty() {
        return Ok(());
    }
    for step in &mut job.steps {
        expand_all(&inputs, &mut step.script)?;
    }
    expand_image(&inputs, &mut job.image)?;
    for service in &mut job.services {
        expand_image(&inputs, service)?;
    }
    for artifact in &mut job.artifacts {
        artifact.name = inputs.expand(&artifact.name)?;
        expand_all(&inputs, &mut artifact.paths)?;
        expand_all(&inputs, &mut artifact.exclude)?;
        artifact.when = inputs.expand(&artifact.when)?;
        artifact.expire_in = inputs.expand(&artifact.expire_in)?;
    }
    for cache in &mut job.cache {
        cache.key = inputs.expand(&cache.key)?;
        cache.policy = inputs.expand(&cache.policy)?;
        expand_all(&inputs, &mut cache.paths)?;
        cache.when = inputs.expand(&cache.when)?;
        expand_all(&inputs, &mut cache.fallback_keys)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs() -> Inputs {
        Inputs::new(
            json!([
                {"key": "username", "value": {"type": "string", "content": "fred"}},
                {"key": "fullname", "value": {"type": "string", "content": "fred tester"}},
                {"key": "age", "value": {"type": "number", "content": 1}},
                {"key": "password", "value": {"type": "string", "content": "hunter2", "sensitive": true}},
                {"key": "list", "value": {"type": "array", "content": ["one", "two", "three"]}},
                {"key": "address", "value": {"type": "struct", "content": {"line1": "Streetname 1"}}},
                {"key": "debug", "value": {"type": "boolean", "content": true}}
            ])
            .as_array()
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn expands_inputs_like_upstream() {
        let inputs = inputs();
        assert_eq!(
            inputs
                .expand(
                    "Hello ${{ job.inputs.username }}, your fullname is ${{ job.inputs.fullname }}"
                )
                .unwrap(),
            "Hello fred, your fullname is fred tester"
        );
        assert_eq!(
            inputs.expand("age ${{ str(job.inputs.age) }}").unwrap(),
            "age 1"
        );
        assert_eq!(
            inputs.expand("Field is ${{ job.inputs.list[1] }}").unwrap(),
            "Field is two"
        );
        assert_eq!(
            inputs
                .expand("${{job.inputs.address.line1}}/${{ job.inputs[\"username\"] }}")
                .unwrap(),
            "Streetname 1/fred"
        );
        assert_eq!(inputs.expand("${{ job.inputs.debug }}").unwrap(), "true");
        assert_eq!(
            inputs.expand("no templates $HOME").unwrap(),
            "no templates $HOME"
        );
    }

    #[test]
    fn refuses_sensitive_inputs_unknown_names_and_broken_templates() {
        let inputs = inputs();
        assert_eq!(
            inputs.expand("pw ${{ job.inputs.password }}"),
            Err(InputError::Sensitive)
        );
        let error = inputs.expand("${{ job.inputs.missing }}").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("failed to interpolate job inputs: "));
        assert!(inputs.expand("${{ foo.bar }}").is_err());
        assert!(inputs.expand("${{ job.inputs.username").is_err());
        assert!(inputs.expand("${{ 1 + 2 }}").is_err());
    }

    #[test]
    fn parse_errors_keep_their_messages() {
        let inputs = inputs();
        for (text, message) in [
            ("${{ job.inputs.username", "unterminated ${{ expression"),
            (
                "${{ 1 + 2 }}",
                "unexpected '+' in expression, expected \"}}\"",
            ),
            ("${{ job. }}", "expected a name after \".\""),
            ("${{ job.inputs[\"username\" }}", "expected \"]\""),
            ("${{ 'fred }}", "unterminated string literal"),
            ("${{ 1.2.3 }}", "invalid number \"1.2.3\""),
            ("${{ $x }}", "unexpected '$' in expression"),
            (
                "${{ str(job.inputs.age }}",
                "expected \")\" after the argument of str",
            ),
        ] {
            assert_eq!(
                inputs.expand(text).unwrap_err().to_string(),
                format!("failed to interpolate job inputs: {message}"),
                "{text}"
            );
        }
    }

    #[test]
    fn without_inputs_text_is_untouched() {
        let inputs = Inputs::default();
        for text in [
            "Hello $",
            "Hello ${{ 1 + 2 }}",
            "${{ job.inputs.username }}",
        ] {
            assert_eq!(inputs.expand(text).unwrap(), text);
        }
    }

    #[test]
    fn validation_messages_match_upstream() {
        let error = |raw: serde_json::Value| {
            Inputs::new(raw.as_array().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(error(json!([{"value": {}}])), "input without key");
        assert_eq!(
            error(json!([{"key": "anykey", "value": {"type": "string"}}])),
            "input \"anykey\" is null, must have valid value"
        );
        assert_eq!(
            error(json!([{"key": "anykey", "value": {"type": "", "content": "x"}}])),
            "invalid type \"\" for input \"anykey\": type is unknown"
        );
        assert_eq!(
            error(json!([{"key": "anykey", "value": {"type": "number", "content": "x"}}])),
            "mismatching type of input \"anykey\". Announced \"number\", but got \"string\""
        );
    }
}
