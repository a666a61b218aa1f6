//! Step definitions: the YAML (or JSON) the service is given in `RunRequest.steps` and the
//! files functions are defined in, parsed and checked before anything runs.
//!
//! A definition has two documents: a `spec` (typed `inputs` with defaults, `outputs` or
//! `delegate`) and the definition itself: `exec` (an argv and a work dir), or `run` (a
//! sequence of named step items, with `outputs` or `delegate`), either with `env`. A step
//! item has a `name` and exactly one of `script`, `func` (or the older `step`), `exec` or
//! `action`, plus `inputs` (not with `script`) and `env`. Errors name the step, the key and
//! the problem.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// A definition that cannot be used, with what is wrong in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

fn error(message: impl Into<String>) -> DefinitionError {
    DefinitionError(message.into())
}

/// The type of an input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Text (the default).
    #[default]
    String,
    /// A 64-bit float.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list of values.
    Array,
    /// A map of values.
    Struct,
}

impl ValueType {
    /// Whether `value` has this type.
    pub fn admits(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (Self::String, Value::String(_))
                | (Self::Number, Value::Number(_))
                | (Self::Boolean, Value::Bool(_))
                | (Self::Array, Value::Array(_))
                | (Self::Struct, Value::Object(_))
        )
    }

    /// The type's name as a definition spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Struct => "struct",
        }
    }
}

/// The type of a value, named as definitions name types (`null` for null).
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "struct",
    }
}

/// A scalar as text (a string as is, a number or boolean as JSON writes it); `None` for
/// null, arrays and maps, which have no one text.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// One declared input or output.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Its type.
    #[serde(rename = "type", default)]
    pub kind: ValueType,
    /// The value when none is given; an input without one is required.
    #[serde(default)]
    pub default: Option<Value>,
    /// Masked in the log wherever it shows.
    #[serde(default)]
    pub sensitive: bool,
    /// For people.
    #[serde(default)]
    pub description: Option<String>,
}

/// What a definition returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputsSpec {
    /// The declared outputs.
    #[default]
    None,
    /// Named, typed outputs.
    Declared(BTreeMap<String, Param>),
    /// Whatever the step named by the definition's `delegate` returns.
    Delegate,
}

/// The first document: the interface.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    /// Inputs by name.
    pub inputs: BTreeMap<String, Param>,
    /// Outputs.
    pub outputs: OutputsSpec,
}

/// An `exec` definition (or step item): an argv run without a shell.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// The argv; each element may hold expressions.
    pub command: Vec<Value>,
    /// Where it runs; the job's work dir when absent.
    #[serde(default)]
    pub work_dir: Option<String>,
    /// How long it may take to stop after SIGTERM (a Go duration such as `5s`).
    #[serde(default)]
    pub cancel_timeout: Option<String>,
}

/// Where a function is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A path: relative ones from the directory of the definition that names it.
    Local(String),
    /// A file in a git repository at a revision.
    Git {
        /// The repository's URL (`https://` added when the reference has no scheme).
        url: String,
        /// The branch, tag or commit.
        rev: String,
        /// The directory in the repository (empty: the root).
        dir: String,
        /// The definition's file name in that directory.
        file: String,
    },
    /// A function compiled into the service (`builtin://<name>`).
    Builtin(String),
}

/// The file name a definition directory holds, newer spelling first.
pub const DEFINITION_FILES: [&str; 2] = ["func.yml", "step.yml"];

impl Reference {
    /// Parses the short form: `./dir`, `/abs/dir`, `builtin://name`, `host/group/project@rev`
    /// or `host/group/project/-/dir/file.yml@rev`.
    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        if let Some(name) = text.strip_prefix("builtin://") {
            return Ok(Self::Builtin(name.to_string()));
        }
        if text.starts_with('.') || text.starts_with('/') {
            return Ok(Self::Local(text.to_string()));
        }
        let Some((location, rev)) = text.rsplit_once('@') else {
            return Err(error(format!(
                "reference {text:?}: a remote function needs a revision (`<url>@<rev>`)"
            )));
        };
        if rev.is_empty() || location.is_empty() {
            return Err(error(format!(
                "reference {text:?}: empty repository or revision"
            )));
        }
        let (repository, path) = match location.split_once("/-/") {
            Some((repository, path)) => (repository, Some(path)),
            None => (location, None),
        };
        let url = if repository.contains("://") {
            repository.to_string()
        } else {
            format!("https://{repository}")
        };
        let (dir, file) = match path {
            Some(path) if path.ends_with(".yml") || path.ends_with(".yaml") => {
                match path.rsplit_once('/') {
                    Some((dir, file)) => (dir.to_string(), file.to_string()),
                    None => (String::new(), path.to_string()),
                }
            }
            Some(path) => (path.trim_end_matches('/').to_string(), String::new()),
            None => (String::new(), String::new()),
        };
        Ok(Self::Git {
            url,
            rev: rev.to_string(),
            dir,
            file,
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawReference {
    Short(String),
    Long { git: RawGit },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    url: String,
    rev: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    file: String,
}

impl RawReference {
    fn resolve(self) -> Result<Reference, DefinitionError> {
        match self {
            Self::Short(text) => Reference::parse(&text),
            Self::Long { git } => Ok(Reference::Git {
                url: git.url,
                rev: git.rev,
                dir: git.dir.trim_matches('/').to_string(),
                file: git.file,
            }),
        }
    }
}

/// What one step item does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// A shell script (bash, else sh).
    Script(String),
    /// A function defined elsewhere.
    Func(Reference),
    /// An argv, as in an `exec` definition.
    Exec(Exec),
    /// A GitHub action (not supported: refused when it would run).
    Action(String),
}

/// One named step of a `run` sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its name: letters, digits and `_`, not starting with a digit.
    pub name: String,
    /// What it does.
    pub kind: StepKind,
    /// Inputs given to a function (values may hold expressions).
    pub inputs: BTreeMap<String, Value>,
    /// Environment for it (values may hold expressions).
    pub env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    func: Option<RawReference>,
    #[serde(default)]
    step: Option<RawReference>,
    #[serde(default)]
    exec: Option<Exec>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    inputs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    env: Option<BTreeMap<String, Value>>,
}

/// Whether `name` is a valid step name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn env_map(
    raw: Option<BTreeMap<String, Value>>,
    owner: &str,
) -> Result<BTreeMap<String, String>, DefinitionError> {
    raw.unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            let text = match (&value, scalar_text(&value)) {
                (_, Some(text)) => text,
                (Value::Null, None) => String::new(),
                (other, None) => {
                    return Err(error(format!(
                        "{owner}: env {key:?}: must be a string, not {}",
                        type_name(other)
                    )))
                }
            };
            Ok((key, text))
        })
        .collect()
}

impl RawStep {
    fn check(self, index: usize) -> Result<Step, DefinitionError> {
        let name = match self.name {
            Some(name) if valid_name(&name) => name,
            Some(name) => {
                return Err(error(format!(
                    "step {name:?}: invalid name: use letters, digits and `_`, not starting with a digit"
                )))
            }
            None => return Err(error(format!("step {}: name is required", index + 1))),
        };
        let owner = format!("step {name:?}");
        let mut kinds = Vec::new();
        if let Some(script) = self.script {
            kinds.push(("script", StepKind::Script(script)));
        }
        if let Some(reference) = self.func {
            kinds.push((
                "func",
                StepKind::Func(
                    reference
                        .resolve()
                        .map_err(|e| error(format!("{owner}: func: {e}")))?,
                ),
            ));
        }
        if let Some(reference) = self.step {
            kinds.push((
                "step",
                StepKind::Func(
                    reference
                        .resolve()
                        .map_err(|e| error(format!("{owner}: step: {e}")))?,
                ),
            ));
        }
        if let Some(exec) = self.exec {
            kinds.push(("exec", StepKind::Exec(exec)));
        }
        if let Some(action) = self.action {
            kinds.push(("action", StepKind::Action(action)));
        }
        if kinds.len() != 1 {
            let given: Vec<&str> = kinds.iter().map(|(key, _)| *key).collect();
            return Err(error(if given.is_empty() {
                format!("{owner}: needs one of script, func, exec or action")
            } else {
                format!(
                    "{owner}: has {}: use exactly one of script, func, exec or action",
                    given.join(" and ")
                )
            }));
        }
        let (key, kind) = kinds.remove(0);
        let inputs = self.inputs.unwrap_or_default();
        if !inputs.is_empty() && matches!(key, "script" | "exec") {
            return Err(error(format!(
                "{owner}: inputs: not allowed with {key} (only with func or action)"
            )));
        }
        Ok(Step {
            env: env_map(self.env, &owner)?,
            name,
            kind,
            inputs,
        })
    }
}

/// The body of a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Run one argv.
    Exec(Exec),
    /// Run named steps in order, stopping at the first failure.
    Run {
        /// The steps.
        steps: Vec<Step>,
        /// Output expressions by name.
        outputs: BTreeMap<String, Value>,
        /// The step whose outputs are this definition's.
        delegate: Option<String>,
    },
}

/// A whole definition: its interface and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The interface.
    pub spec: Spec,
    /// Environment for the exec process or every sub-step.
    pub env: BTreeMap<String, String>,
    /// What it does.
    pub body: Body,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpecDocument {
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    inputs: Option<BTreeMap<String, Param>>,
    #[serde(default)]
    outputs: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    #[serde(default)]
    exec: Option<Exec>,
    #[serde(default)]
    run: Option<Vec<RawStep>>,
    #[serde(default)]
    outputs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    delegate: Option<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, Value>>,
}

fn yaml_problem(error: serde_norway::Error) -> String {
    error.to_string()
}

/// Checks the steps of a sequence: each valid, names unique.
pub fn check_steps(raw: Vec<Value>) -> Result<Vec<Step>, DefinitionError> {
    let mut steps = Vec::new();
    for (index, value) in raw.into_iter().enumerate() {
        let raw: RawStep =
            serde_json::from_value(value).map_err(|e| error(format!("step {}: {e}", index + 1)))?;
        steps.push(raw.check(index)?);
    }
    unique(&steps)?;
    Ok(steps)
}

fn unique(steps: &[Step]) -> Result<(), DefinitionError> {
    let mut seen = std::collections::BTreeSet::new();
    for step in steps {
        if !seen.insert(step.name.as_str()) {
            return Err(error(format!(
                "step {:?}: the name is used twice in one sequence",
                step.name
            )));
        }
    }
    Ok(())
}

fn parse_spec(raw: RawSpecDocument) -> Result<Spec, DefinitionError> {
    let Some(raw) = raw.spec else {
        return Ok(Spec::default());
    };
    let outputs = match raw.outputs {
        None | Some(Value::Null) => OutputsSpec::None,
        Some(Value::String(text)) if text == "delegate" => OutputsSpec::Delegate,
        Some(value @ Value::Object(_)) => OutputsSpec::Declared(
            serde_json::from_value(value).map_err(|e| error(format!("spec: outputs: {e}")))?,
        ),
        Some(other) => {
            return Err(error(format!(
                "spec: outputs: must be a map of outputs or `delegate`, not {}",
                type_name(&other)
            )))
        }
    };
    let inputs = raw.inputs.unwrap_or_default();
    for (name, input) in &inputs {
        if let Some(default) = &input.default {
            if !input.kind.admits(default) {
                return Err(error(format!(
                    "spec: input {name:?}: the default is a {}, not a {}",
                    type_name(default),
                    input.kind.name()
                )));
            }
        }
    }
    Ok(Spec { inputs, outputs })
}

/// Parses definition text: two YAML documents (spec, then definition), or one JSON/YAML
/// array, which is a `run` sequence with an empty spec (what a client may send as
/// `RunRequest.steps`).
pub fn parse(text: &str, origin: &str) -> Result<Definition, DefinitionError> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document)
            .map_err(|e| error(format!("{origin}: {}", yaml_problem(e))))?;
        documents.push(value);
    }
    match documents.len() {
        1 if documents[0].is_array() => {
            let Some(Value::Array(items)) = documents.pop() else {
                return Err(error(format!("{origin}: expected a list of steps")));
            };
            Ok(Definition {
                spec: Spec::default(),
                env: BTreeMap::new(),
                body: Body::Run {
                    steps: check_steps(items)?,
                    outputs: BTreeMap::new(),
                    delegate: None,
                },
            })
        }
        2 => {
            let definition = documents.pop().unwrap_or_default();
            let spec = documents.pop().unwrap_or_default();
            let spec: RawSpecDocument = if spec.is_null() {
                RawSpecDocument::default()
            } else {
                serde_json::from_value(spec).map_err(|e| error(format!("{origin}: spec: {e}")))?
            };
            let spec = parse_spec(spec).map_err(|e| error(format!("{origin}: {e}")))?;
            let raw: RawDefinition = serde_json::from_value(definition)
                .map_err(|e| error(format!("{origin}: definition: {e}")))?;
            definition_from(spec, raw).map_err(|e| error(format!("{origin}: {e}")))
        }
        count => Err(error(format!(
            "{origin}: expected two YAML documents (spec, then definition), found {count}"
        ))),
    }
}

fn definition_from(spec: Spec, raw: RawDefinition) -> Result<Definition, DefinitionError> {
    let env = env_map(raw.env, "definition")?;
    let body = match (raw.exec, raw.run) {
        (Some(exec), None) => {
            if raw.outputs.is_some() || raw.delegate.is_some() {
                return Err(error(
                    "definition: outputs and delegate belong to a run sequence, not exec",
                ));
            }
            Body::Exec(exec)
        }
        (None, Some(items)) => {
            let mut steps = Vec::new();
            for (index, item) in items.into_iter().enumerate() {
                steps.push(item.check(index)?);
            }
            unique(&steps)?;
            if let Some(delegate) = &raw.delegate {
                if !steps.iter().any(|step| &step.name == delegate) {
                    return Err(error(format!(
                        "definition: delegate: no step named {delegate:?}"
                    )));
                }
                if spec.outputs != OutputsSpec::Delegate {
                    return Err(error(
                        "definition: delegate: the spec must say `outputs: delegate`",
                    ));
                }
            } else if spec.outputs == OutputsSpec::Delegate {
                return Err(error(
                    "definition: the spec says `outputs: delegate` but no delegate is named",
                ));
            }
            Body::Run {
                steps,
                outputs: raw.outputs.unwrap_or_default(),
                delegate: raw.delegate,
            }
        }
        (Some(_), Some(_)) => return Err(error("definition: has both exec and run: use one")),
        (None, None) => return Err(error("definition: needs exec or run")),
    };
    Ok(Definition { spec, env, body })
}

/// Reads the definition in `dir` (`func.yml`, else `step.yml`), or the file itself when
/// `path` names one.
pub fn load(path: &Path) -> Result<(Definition, std::path::PathBuf), DefinitionError> {
    let file = if path.is_dir() {
        DEFINITION_FILES
            .iter()
            .map(|name| path.join(name))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                error(format!(
                    "{}: no {} in this directory",
                    path.display(),
                    DEFINITION_FILES.join(" or ")
                ))
            })?
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| error(format!("reading {}: {e}", file.display())))?;
    let definition = parse(&text, &file.display().to_string())?;
    Ok((definition, file))
}

/// Checks the inputs given to a function against its spec: every given one declared and of
/// its type, defaults filled in, required ones present.
pub fn check_inputs(
    spec: &Spec,
    given: &BTreeMap<String, Value>,
    owner: &str,
) -> Result<BTreeMap<String, Value>, DefinitionError> {
    let mut inputs = BTreeMap::new();
    for (name, value) in given {
        let Some(param) = spec.inputs.get(name) else {
            return Err(error(format!(
                "{owner}: input {name:?}: not declared by the function's spec"
            )));
        };
        if !param.kind.admits(value) {
            return Err(error(format!(
                "{owner}: input {name:?}: expected a {}, got a {}",
                param.kind.name(),
                type_name(value)
            )));
        }
        inputs.insert(name.clone(), value.clone());
    }
    for (name, param) in &spec.inputs {
        if inputs.contains_key(name) {
            continue;
        }
        match &param.default {
            Some(default) => {
                inputs.insert(name.clone(), default.clone());
            }
            None => {
                return Err(error(format!(
                    "{owner}: input {name:?}: required by the function's spec but not given"
                )))
            }
        }
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstreams_request_preamble_is_an_empty_spec_and_a_run_sequence() {
        let definition = parse(
            "{}\n---\nrun:\n    - name: hello\n      script: echo hello world\n",
            "request",
        )
        .expect("parses");
        assert_eq!(definition.spec, Spec::default());
        let Body::Run { steps, .. } = definition.body else {
            panic!("a run sequence")
        };
        assert_eq!(steps[0].name, "hello");
        assert_eq!(steps[0].kind, StepKind::Script("echo hello world".into()));
    }

    #[test]
    fn a_json_array_is_a_run_sequence() {
        let definition = parse(
            r#"[{"name":"a","exec":{"command":["echo","x"]}},{"name":"b","func":"./f","inputs":{"n":1}}]"#,
            "request",
        )
        .expect("parses");
        let Body::Run { steps, .. } = definition.body else {
            panic!("a run sequence")
        };
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[1].kind,
            StepKind::Func(Reference::Local("./f".into()))
        );
        assert_eq!(steps[1].inputs["n"], json!(1));
    }

    #[test]
    fn bad_items_are_named_with_the_key_and_the_problem() {
        let cases = [
            (r#"[{"script":"x"}]"#, "step 1: name is required"),
            (
                r#"[{"name":"9x","script":"x"}]"#,
                "step \"9x\": invalid name",
            ),
            (
                r#"[{"name":"a","script":"x","exec":{"command":["y"]}}]"#,
                "step \"a\": has script and exec",
            ),
            (r#"[{"name":"a"}]"#, "step \"a\": needs one of"),
            (
                r#"[{"name":"a","script":"x","inputs":{"b":1}}]"#,
                "step \"a\": inputs: not allowed with script",
            ),
            (
                r#"[{"name":"a","script":"x"},{"name":"a","script":"y"}]"#,
                "used twice",
            ),
            (
                r#"[{"name":"a","func":"gitlab.com/x/y"}]"#,
                "needs a revision",
            ),
            (r#"[{"name":"a","scrpt":"x"}]"#, "unknown field `scrpt`"),
        ];
        for (text, want) in cases {
            let problem = parse(text, "request").expect_err(text).0;
            assert!(problem.contains(want), "{text}: {problem}");
        }
    }

    #[test]
    fn references_in_every_form() {
        assert_eq!(
            Reference::parse("gitlab.com/org/echo-step@v5").expect("parses"),
            Reference::Git {
                url: "https://gitlab.com/org/echo-step".into(),
                rev: "v5".into(),
                dir: String::new(),
                file: String::new()
            }
        );
        assert_eq!(
            Reference::parse("http://127.0.0.1:8080/g/p/-/steps/echo/func.yml@main")
                .expect("parses"),
            Reference::Git {
                url: "http://127.0.0.1:8080/g/p".into(),
                rev: "main".into(),
                dir: "steps/echo".into(),
                file: "func.yml".into()
            }
        );
        assert_eq!(
            Reference::parse("builtin://script_legacy").expect("parses"),
            Reference::Builtin("script_legacy".into())
        );
        let long: RawReference = serde_json::from_value(
            json!({"git": {"url": "http://h/r", "rev": "abc", "dir": "/s/"}}),
        )
        .expect("parses");
        assert_eq!(
            long.resolve().expect("resolves"),
            Reference::Git {
                url: "http://h/r".into(),
                rev: "abc".into(),
                dir: "s".into(),
                file: String::new()
            }
        );
    }

    #[test]
    fn a_function_spec_types_its_inputs_and_defaults() {
        let definition = parse(
            "spec:\n  inputs:\n    who:\n      type: string\n      default: world\n    count:\n      type: number\n  outputs:\n    greeting:\n      type: string\n---\nexec:\n  command: [echo, hi]\n",
            "func.yml",
        )
        .expect("parses");
        let filled = check_inputs(
            &definition.spec,
            &BTreeMap::from([("count".to_string(), json!(2))]),
            "step \"g\"",
        )
        .expect("fills");
        assert_eq!(filled["who"], json!("world"));
        let missing = check_inputs(&definition.spec, &BTreeMap::new(), "step \"g\"")
            .expect_err("count is required");
        assert!(missing.0.contains("input \"count\": required"), "{missing}");
        let wrong = check_inputs(
            &definition.spec,
            &BTreeMap::from([("count".to_string(), json!("two"))]),
            "step \"g\"",
        )
        .expect_err("a string is no number");
        assert!(
            wrong.0.contains("expected a number, got a string"),
            "{wrong}"
        );
        let undeclared = check_inputs(
            &definition.spec,
            &BTreeMap::from([("x".to_string(), json!(1)), ("count".to_string(), json!(1))]),
            "step \"g\"",
        )
        .expect_err("x is not declared");
        assert!(undeclared.0.contains("not declared"), "{undeclared}");
        assert!(matches!(definition.spec.outputs, OutputsSpec::Declared(_)));
    }

    #[test]
    fn delegation_must_be_declared_on_both_sides() {
        let ok = parse(
            "spec:\n  outputs: delegate\n---\nrun:\n  - name: inner\n    script: 'true'\ndelegate: inner\n",
            "f",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let missing = parse(
            "spec:\n  outputs: delegate\n---\nrun:\n  - name: inner\n    script: 'true'\n",
            "f",
        )
        .expect_err("no delegate named");
        assert!(missing.0.contains("no delegate is named"), "{missing}");
        let unknown = parse(
            "spec:\n  outputs: delegate\n---\nrun:\n  - name: inner\n    script: 'true'\ndelegate: other\n",
            "f",
        )
        .expect_err("no such step");
        assert!(unknown.0.contains("no step named \"other\""), "{unknown}");
    }

    #[test]
    fn document_count_and_yaml_errors_name_the_origin() {
        let one = parse("exec:\n  command: [x]\n", "f.yml").expect_err("one document");
        assert!(
            one.0.starts_with("f.yml: expected two YAML documents"),
            "{one}"
        );
        let broken = parse("{}\n---\nrun: [\n", "f.yml").expect_err("bad YAML");
        assert!(broken.0.starts_with("f.yml: "), "{broken}");
        let both = parse("{}\n---\nexec: {command: [x]}\nrun: []\n", "f.yml").expect_err("both");
        assert!(both.0.contains("both exec and run"), "{both}");
        let default = parse(
            "spec:\n  inputs:\n    n:\n      type: number\n      default: x\n---\nexec: {command: [x]}\n",
            "f.yml",
        )
        .expect_err("bad default");
        assert!(
            default.0.contains("the default is a string, not a number"),
            "{default}"
        );
    }
}
