//! Runs a request's steps: each step item in order, its expressions evaluated just before it
//! runs, its process in a process group of its own (SIGTERM to the group on a stop, SIGKILL
//! after the grace period), its outputs and exports read from the files it was given, its
//! result reported as it finishes.
//!
//! Environment precedence, highest first: the function's own `env`, the caller's `env` on the
//! item, the sequence's `env`, exports of earlier steps, the request's `env`, the service's own
//! environment. Job variables are not environment variables: expressions read them as `job`
//! (or `vars`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use runner_core::process::{go_signal_name, spawn_in_process_group, Leftovers, ProcessExit};
use runner_core::stage_runner::{supervise, Chunk, KillTimeouts, OutputSink};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::definition::{
    self, type_name, Body, Definition, OutputsSpec, Param, Reference, Step, StepKind,
};
use crate::expr::{self, Scope};
use crate::output::JobOutput;
use crate::proto::{self, step_result::Status as StepStatus};

/// Why a run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A step failed (a non-zero exit, a bad definition or expression); the message names the
    /// step and, for an exit, says `exit status N`.
    Step(String),
    /// The run was stopped (cancel, timeout or close) while a step ran or before the next.
    Stopped(String),
    /// The service could not do its part (a temp file, a spawn of the shell).
    Internal(String),
}

impl Failure {
    /// The message, as `Status.message` carries it.
    pub fn message(&self) -> &str {
        match self {
            Self::Step(message) | Self::Stopped(message) | Self::Internal(message) => message,
        }
    }
}

/// What every step of one request shares.
pub struct Runtime {
    /// The request's log.
    pub output: JobOutput,
    /// Cancelled to stop the run gracefully.
    pub stop: CancellationToken,
    /// From SIGTERM to SIGKILL.
    pub grace: Duration,
    /// The default work dir of every step.
    pub work_dir: PathBuf,
    /// The service's environment with the request's `env` over it.
    pub base_env: BTreeMap<String, String>,
    /// The job's variables, by key (the `job` and `vars` contexts).
    pub job: Map<String, Value>,
    /// The keys of the masked ones: what is computed from them is masked too.
    pub masked: Vec<String>,
    /// The request's private directory: output and export files, fetched functions.
    pub temp: PathBuf,
    /// Called with each step's result as it finishes.
    pub on_result: Box<dyn Fn(&proto::StepResult) + Send + Sync>,
    /// Exports of steps so far, for every later step.
    exports: Mutex<BTreeMap<String, String>>,
    counter: AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

/// Where a sequence runs: its definition's inputs, directory and environment.
#[derive(Debug, Clone, Default)]
struct Frame {
    inputs: Map<String, Value>,
    sensitive_inputs: Vec<String>,
    step_dir: PathBuf,
    /// The environment below exports (the request's and the service's).
    base: BTreeMap<String, String>,
    /// The environment above exports: the sequence's `env` and its callers'.
    over: BTreeMap<String, String>,
    /// How many functions deep: 0 for the request's own steps, whose results are reported
    /// as they finish (deeper ones go inside their parent's `sub_step_results`).
    depth: usize,
}

/// How deep functions may call functions: a function that calls itself fails, it does not
/// overflow the service's stack.
const MAX_DEPTH: usize = 32;

/// How long one git command fetching a function may take.
const GIT_BOUND: Duration = Duration::from_secs(300);

impl Frame {
    /// `base`, then `exports`, then `over`.
    fn env(&self, exports: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.base.clone();
        env.extend(exports.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(self.over.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}

/// One finished step: its result, and what later steps may read of it.
#[derive(Debug, Clone)]
struct Done {
    result: proto::StepResult,
    outputs: Map<String, Value>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime {
    /// A runtime; nothing runs until [`Runtime::run`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        output: JobOutput,
        stop: CancellationToken,
        grace: Duration,
        work_dir: PathBuf,
        base_env: BTreeMap<String, String>,
        job: Map<String, Value>,
        temp: PathBuf,
        on_result: Box<dyn Fn(&proto::StepResult) + Send + Sync>,
    ) -> Self {
        Self {
            output,
            stop,
            grace,
            work_dir,
            base_env,
            job,
            masked: Vec::new(),
            temp,
            on_result,
            exports: Mutex::new(BTreeMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Runs the request's definition to its end.
    pub async fn run(&self, definition: &Definition) -> Result<(), Failure> {
        let inputs = definition::check_inputs(&definition.spec, &BTreeMap::new(), "request")
            .map_err(|e| Failure::Step(e.0))?;
        let mut frame = Frame {
            inputs: inputs.into_iter().collect(),
            sensitive_inputs: Vec::new(),
            step_dir: self.work_dir.clone(),
            base: self.base_env.clone(),
            over: BTreeMap::new(),
            depth: 0,
        };
        match &definition.body {
            Body::Run { steps, .. } => {
                let scope = self.scope(&frame, &frame.base, &Map::new());
                frame.over = self.expand_env(&definition.env, &scope, "request")?;
                let (_, failure) = self.sequence(steps, &frame).await;
                failure.map_or(Ok(()), Err)
            }
            Body::Exec(exec) => {
                let step = Step {
                    name: "exec".into(),
                    kind: StepKind::Exec(exec.clone()),
                    inputs: BTreeMap::new(),
                    env: definition.env.clone(),
                };
                let (_, failure) = self.sequence(std::slice::from_ref(&step), &frame).await;
                failure.map_or(Ok(()), Err)
            }
        }
    }

    fn lock_exports(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.exports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn scope(
        &self,
        frame: &Frame,
        env: &BTreeMap<String, String>,
        steps: &Map<String, Value>,
    ) -> Scope {
        let mut scope = Scope::new();
        scope.set("inputs", Value::Object(frame.inputs.clone()));
        for name in &frame.sensitive_inputs {
            scope.mark_sensitive(&["inputs", name]);
        }
        scope.set(
            "env",
            Value::Object(
                env.iter()
                    .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                    .collect(),
            ),
        );
        scope.set("job", Value::Object(self.job.clone()));
        scope.set("vars", Value::Object(self.job.clone()));
        for key in &self.masked {
            scope.mark_sensitive(&["job", key]);
            scope.mark_sensitive(&["vars", key]);
        }
        scope.set("steps", Value::Object(steps.clone()));
        let dir = Value::String(frame.step_dir.display().to_string());
        scope.set("step_dir", dir.clone());
        scope.set("func_dir", dir);
        scope.set(
            "work_dir",
            Value::String(self.work_dir.display().to_string()),
        );
        scope
    }

    /// Each value of `env` expanded in `scope`.
    fn expand_env(
        &self,
        env: &BTreeMap<String, String>,
        scope: &Scope,
        owner: &str,
    ) -> Result<BTreeMap<String, String>, Failure> {
        env.iter()
            .map(|(key, value)| {
                self.expand_text(value, scope, owner, &format!("env {key:?}"))
                    .map(|value| (key.clone(), value))
            })
            .collect()
    }

    fn expand_text(
        &self,
        text: &str,
        scope: &Scope,
        owner: &str,
        key: &str,
    ) -> Result<String, Failure> {
        let expanded = expr::expand_str(text, scope)
            .map_err(|e| Failure::Step(format!("{owner}: {key}: {e}")))?;
        let text = match &expanded.value {
            Value::Null => String::new(),
            other => definition::scalar_text(other).unwrap_or_else(|| other.to_string()),
        };
        if expanded.sensitive {
            self.output.add_phrase(&text);
        }
        Ok(text)
    }

    fn expand_json(
        &self,
        value: &Value,
        scope: &Scope,
        owner: &str,
        key: &str,
    ) -> Result<Value, Failure> {
        let expanded = expr::expand_value(value, scope)
            .map_err(|e| Failure::Step(format!("{owner}: {key}: {e}")))?;
        if expanded.sensitive {
            mask_strings(&self.output, &expanded.value);
        }
        Ok(expanded.value)
    }

    fn files(&self) -> Result<(PathBuf, PathBuf), Failure> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let output = self.temp.join(format!("output-{n}"));
        let export = self.temp.join(format!("export-{n}"));
        for file in [&output, &export] {
            std::fs::write(file, b"")
                .map_err(|e| Failure::Internal(format!("creating {}: {e}", file.display())))?;
        }
        Ok((output, export))
    }

    /// Runs `steps` in order, stopping at the first failure; the results so far and the
    /// failure, if any.
    fn sequence<'a>(
        &'a self,
        steps: &'a [Step],
        frame: &'a Frame,
    ) -> Boxed<'a, (Vec<Done>, Option<Failure>)> {
        Box::pin(async move {
            let mut done: Vec<Done> = Vec::new();
            let mut by_name = Map::new();
            for step in steps {
                if self.stop.is_cancelled() {
                    return (done, Some(Failure::Stopped("cancelled".into())));
                }
                self.output
                    .line(&format!("Running step name={}", step.name));
                let (finished, failure) = self.step(step, frame, &by_name).await;
                by_name.insert(
                    step.name.clone(),
                    serde_json::json!({"outputs": Value::Object(finished.outputs.clone())}),
                );
                if frame.depth == 0 {
                    (self.on_result)(&finished.result);
                }
                done.push(finished);
                if failure.is_some() {
                    return (done, failure);
                }
            }
            (done, None)
        })
    }

    /// Runs one step item.
    fn step<'a>(
        &'a self,
        step: &'a Step,
        frame: &'a Frame,
        steps: &'a Map<String, Value>,
    ) -> Boxed<'a, (Done, Option<Failure>)> {
        Box::pin(async move {
            let owner = format!("step {:?}", step.name);
            let mut result = proto::StepResult {
                step: step.name.clone(),
                status: StepStatus::Running as i32,
                ..proto::StepResult::default()
            };
            let outcome = self
                .step_body(step, frame, steps, &owner, &mut result)
                .await;
            let (outputs, failure) = match outcome {
                Ok(outputs) => (outputs, None),
                Err(failure) => (Map::new(), Some(failure)),
            };
            result.status = match &failure {
                None => StepStatus::Success,
                Some(Failure::Stopped(_)) => StepStatus::Cancelled,
                Some(_) => StepStatus::Failure,
            } as i32;
            result.outputs = outputs
                .iter()
                .map(|(key, value)| (key.clone(), to_proto_value(value)))
                .collect();
            (Done { result, outputs }, failure)
        })
    }

    async fn step_body(
        &self,
        step: &Step,
        frame: &Frame,
        steps: &Map<String, Value>,
        owner: &str,
        result: &mut proto::StepResult,
    ) -> Result<Map<String, Value>, Failure> {
        let below = frame.env(&self.lock_exports());
        let item_env = self.expand_env(&step.env, &self.scope(frame, &below, steps), owner)?;
        let mut env = below;
        env.extend(item_env.clone());
        let (output_file, export_file) = self.files()?;
        let mut scope = self.scope(frame, &env, steps);
        scope.set(
            "output_file",
            Value::String(output_file.display().to_string()),
        );
        scope.set(
            "export_file",
            Value::String(export_file.display().to_string()),
        );
        let outputs = match &step.kind {
            StepKind::Script(script) => {
                let script = self.expand_text(script, &scope, owner, "script")?;
                let argv = vec![shell(&env), "-e".to_string(), "-c".to_string(), script];
                self.exec(owner, &argv, &self.work_dir, &env, result)
                    .await?;
                read_outputs(&output_file, None, owner)?
            }
            StepKind::Exec(exec) => {
                let (argv, work_dir) = self.exec_argv(exec, &scope, owner)?;
                self.exec(owner, &argv, &work_dir, &env, result).await?;
                read_outputs(&output_file, None, owner)?
            }
            StepKind::Action(action) => {
                return Err(Failure::Step(format!(
                    "{owner}: action {action:?}: GitHub actions are not supported"
                )))
            }
            StepKind::Func(reference) => {
                if frame.depth >= MAX_DEPTH {
                    return Err(Failure::Step(format!(
                        "{owner}: functions nested more than {MAX_DEPTH} deep (does one call itself?)"
                    )));
                }
                let (definition, file) = self.resolve(reference, frame, owner).await?;
                result.spec_definition = file.display().to_string();
                let given = step
                    .inputs
                    .iter()
                    .map(|(key, value)| {
                        self.expand_json(value, &scope, owner, &format!("inputs {key:?}"))
                            .map(|value| (key.clone(), value))
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()?;
                let inputs = definition::check_inputs(&definition.spec, &given, owner)
                    .map_err(|e| Failure::Step(e.0))?;
                let sensitive_inputs: Vec<String> = definition
                    .spec
                    .inputs
                    .iter()
                    .filter(|(_, param)| param.sensitive)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in &sensitive_inputs {
                    if let Some(value) = inputs.get(name) {
                        mask_strings(&self.output, value);
                    }
                }
                let step_dir = file
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.work_dir.clone());
                let mut inner = Frame {
                    inputs: inputs.into_iter().collect(),
                    sensitive_inputs,
                    step_dir,
                    base: frame.base.clone(),
                    over: frame.over.clone(),
                    depth: frame.depth + 1,
                };
                inner.over.extend(item_env);
                let own = self.expand_env(
                    &definition.env,
                    &self.scope(&inner, &env, &Map::new()),
                    owner,
                )?;
                inner.over.extend(own);
                self.function(&definition, &inner, owner, result).await?
            }
        };
        let exports = read_exports(&export_file, owner)?;
        if !exports.is_empty() {
            result.exports = exports.clone().into_iter().collect();
            self.lock_exports().extend(exports);
        }
        Ok(outputs)
    }

    fn exec_argv(
        &self,
        exec: &definition::Exec,
        scope: &Scope,
        owner: &str,
    ) -> Result<(Vec<String>, PathBuf), Failure> {
        let mut argv = Vec::new();
        for (index, part) in exec.command.iter().enumerate() {
            let key = format!("exec command[{index}]");
            let value = self.expand_json(part, scope, owner, &key)?;
            argv.push(definition::scalar_text(&value).ok_or_else(|| {
                Failure::Step(format!(
                    "{owner}: {key}: must be a string, not {}",
                    type_name(&value)
                ))
            })?);
        }
        if argv.is_empty() {
            return Err(Failure::Step(format!("{owner}: exec command: is empty")));
        }
        let work_dir = match &exec.work_dir {
            Some(dir) => PathBuf::from(self.expand_text(dir, scope, owner, "exec work_dir")?),
            None => self.work_dir.clone(),
        };
        Ok((argv, work_dir))
    }

    /// Runs a function's definition with its inputs checked: its exec, or its sequence.
    async fn function(
        &self,
        definition: &Definition,
        frame: &Frame,
        owner: &str,
        result: &mut proto::StepResult,
    ) -> Result<Map<String, Value>, Failure> {
        match &definition.body {
            Body::Exec(exec) => {
                let (output_file, export_file) = self.files()?;
                let env = frame.env(&self.lock_exports());
                let mut scope = self.scope(frame, &env, &Map::new());
                scope.set(
                    "output_file",
                    Value::String(output_file.display().to_string()),
                );
                scope.set(
                    "export_file",
                    Value::String(export_file.display().to_string()),
                );
                let (argv, work_dir) = self.exec_argv(exec, &scope, owner)?;
                self.exec(owner, &argv, &work_dir, &env, result).await?;
                let exports = read_exports(&export_file, owner)?;
                if !exports.is_empty() {
                    self.lock_exports().extend(exports);
                }
                let declared = match &definition.spec.outputs {
                    OutputsSpec::Declared(declared) => Some(declared),
                    _ => None,
                };
                let outputs = read_outputs(&output_file, declared, owner)?;
                self.mask_sensitive_outputs(&definition.spec.outputs, &outputs);
                Ok(outputs)
            }
            Body::Run {
                steps,
                outputs,
                delegate,
            } => {
                let (done, failure) = self.sequence(steps, frame).await;
                result.sub_step_results = done.iter().map(|d| d.result.clone()).collect();
                if let Some(failure) = failure {
                    return Err(failure);
                }
                let found = if let Some(delegate) = delegate {
                    done.iter()
                        .zip(steps)
                        .find(|(_, step)| &step.name == delegate)
                        .map(|(done, _)| done.outputs.clone())
                        .unwrap_or_default()
                } else {
                    let mut by_name = Map::new();
                    for (done, step) in done.iter().zip(steps) {
                        by_name.insert(
                            step.name.clone(),
                            serde_json::json!({"outputs": Value::Object(done.outputs.clone())}),
                        );
                    }
                    let env = frame.env(&self.lock_exports());
                    let scope = self.scope(frame, &env, &by_name);
                    let mut found = Map::new();
                    for (name, expression) in outputs {
                        let value = self.expand_json(
                            expression,
                            &scope,
                            owner,
                            &format!("outputs {name:?}"),
                        )?;
                        found.insert(name.clone(), value);
                    }
                    if let OutputsSpec::Declared(declared) = &definition.spec.outputs {
                        check_outputs(&mut found, declared, owner)?;
                    }
                    found
                };
                self.mask_sensitive_outputs(&definition.spec.outputs, &found);
                Ok(found)
            }
        }
    }

    fn mask_sensitive_outputs(&self, spec: &OutputsSpec, outputs: &Map<String, Value>) {
        if let OutputsSpec::Declared(declared) = spec {
            for (name, param) in declared {
                if param.sensitive {
                    if let Some(value) = outputs.get(name) {
                        mask_strings(&self.output, value);
                    }
                }
            }
        }
    }

    /// Finds and reads the definition a reference names.
    async fn resolve(
        &self,
        reference: &Reference,
        frame: &Frame,
        owner: &str,
    ) -> Result<(Definition, PathBuf), Failure> {
        let path = match reference {
            Reference::Local(path) => {
                let path = Path::new(path);
                if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    frame.step_dir.join(path)
                }
            }
            Reference::Git {
                url,
                rev,
                dir,
                file,
            } => {
                let checkout = self.fetch_git(url, rev, owner).await?;
                let base = if dir.is_empty() {
                    checkout.clone()
                } else {
                    checkout.join(dir)
                };
                if !file.is_empty() {
                    base.join(file)
                } else if dir.is_empty()
                    && !definition::DEFINITION_FILES
                        .iter()
                        .any(|name| base.join(name).is_file())
                    && base.join("steps").is_dir()
                {
                    base.join("steps")
                } else {
                    base
                }
            }
            Reference::Builtin(name) => {
                return Err(Failure::Step(format!(
                    "{owner}: builtin://{name}: no such built-in function"
                )))
            }
        };
        definition::load(&path).map_err(|e| Failure::Step(format!("{owner}: {e}")))
    }

    /// Fetches `url` at `rev` into the request's directory (once per URL and revision).
    async fn fetch_git(&self, url: &str, rev: &str, owner: &str) -> Result<PathBuf, Failure> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{url}@{rev}").as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = self.temp.join("functions").join(name);
        if dir.join(".git").is_dir() {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Internal(format!("creating {}: {e}", dir.display())))?;
        let git = |args: Vec<String>| {
            let dir = dir.clone();
            async move {
                let output = tokio::process::Command::new("git")
                    .args(&args)
                    .current_dir(&dir)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output();
                let output = tokio::select! {
                    output = tokio::time::timeout(GIT_BOUND, output) => output,
                    () = self.stop.cancelled() => return Err("stopped".to_string()),
                };
                match output {
                    Ok(Ok(output)) if output.status.success() => Ok(()),
                    Ok(Ok(output)) => {
                        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
                    }
                    Ok(Err(error)) => Err(format!("running git: {error}")),
                    Err(_) => Err(format!("git {} took longer than {GIT_BOUND:?}", args[0])),
                }
            }
        };
        let fail = |problem: String| {
            let _ = std::fs::remove_dir_all(&dir);
            Failure::Step(format!("{owner}: fetching {url}@{rev}: {problem}"))
        };
        git(vec!["init".into(), "-q".into()]).await.map_err(fail)?;
        let shallow = git(vec![
            "fetch".into(),
            "-q".into(),
            "--depth".into(),
            "1".into(),
            url.into(),
            rev.into(),
        ])
        .await;
        if shallow.is_err() {
            // A commit a server will not serve by name: fetch everything, then look it up.
            git(vec![
                "fetch".into(),
                "-q".into(),
                url.into(),
                "+refs/*:refs/remotes/origin/*".into(),
            ])
            .await
            .map_err(fail)?;
            git(vec!["checkout".into(), "-q".into(), rev.into()])
                .await
                .map_err(fail)?;
        } else {
            git(vec!["checkout".into(), "-q".into(), "FETCH_HEAD".into()])
                .await
                .map_err(fail)?;
        }
        Ok(dir)
    }

    /// Runs one process to its end (or the stop), its output into the log.
    async fn exec(
        &self,
        owner: &str,
        argv: &[String],
        work_dir: &Path,
        env: &BTreeMap<String, String>,
        result: &mut proto::StepResult,
    ) -> Result<(), Failure> {
        result.exec_result = Some(proto::step_result::ExecResult {
            command: argv.to_vec(),
            work_dir: work_dir.display().to_string(),
            exit_code: 0,
        });
        // The step's environment holds the service's and the job's; results carry none of it.
        let Some(program) = argv.first() else {
            return Err(Failure::Step(format!("{owner}: exec command: is empty")));
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(&argv[1..])
            .current_dir(work_dir)
            .env_clear()
            .envs(env);
        let started = spawn_in_process_group(command, false, Leftovers::Kill).map_err(|e| {
            Failure::Step(format!(
                "{owner}: {e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ))
        })?;
        // The stage runner's stop: SIGTERM to the group, the grace period for the group and
        // its output to end, SIGKILL; the output read until it ends (bounded).
        let ended = supervise(
            started,
            &[],
            OutputTo(self.output.clone()),
            &self.stop,
            KillTimeouts {
                graceful: self.grace,
                force: Duration::from_secs(5),
            },
        )
        .await;
        self.output.end_process();
        let ended = ended.map_err(|e| Failure::Internal(format!("{owner}: {}", e.message())))?;
        let (exit, stopped) = (ended.exit, ended.stopped);
        let (code, text) = match exit {
            ProcessExit::Code(code) => (code, format!("exit status {code}")),
            ProcessExit::Signal(signal) => (-1, format!("signal: {}", go_signal_name(signal))),
        };
        if let Some(exec) = result.exec_result.as_mut() {
            exec.exit_code = code;
        }
        if stopped {
            return Err(Failure::Stopped(format!("{owner}: {text}")));
        }
        if code != 0 {
            return Err(Failure::Step(format!("{owner}: {text}")));
        }
        Ok(())
    }
}

/// `bash` when the step's PATH has it, else `sh`.
fn shell(env: &BTreeMap<String, String>) -> String {
    let path = env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or("/usr/bin:/bin");
    let has_bash = std::env::split_paths(path).any(|dir| dir.join("bash").is_file());
    if has_bash { "bash" } else { "sh" }.to_string()
}

fn mask_strings(output: &JobOutput, value: &Value) {
    match value {
        Value::String(text) => output.add_phrase(text),
        Value::Array(items) => items.iter().for_each(|item| mask_strings(output, item)),
        Value::Object(map) => map.values().for_each(|item| mask_strings(output, item)),
        Value::Number(number) => output.add_phrase(&number.to_string()),
        _ => {}
    }
}

/// The JSON lines `{"name": …, "value": …}` of an output or export file.
fn read_lines(file: &Path, owner: &str, what: &str) -> Result<Vec<(String, Value)>, Failure> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Value = serde_json::from_str(line).map_err(|e| {
            Failure::Step(format!("{owner}: {what} line {}: not JSON: {e}", index + 1))
        })?;
        let (Some(Value::String(name)), Some(value)) = (parsed.get("name"), parsed.get("value"))
        else {
            return Err(Failure::Step(format!(
                "{owner}: {what} line {}: expected {{\"name\": …, \"value\": …}}",
                index + 1
            )));
        };
        found.push((name.clone(), value.clone()));
    }
    Ok(found)
}

fn read_outputs(
    file: &Path,
    declared: Option<&BTreeMap<String, Param>>,
    owner: &str,
) -> Result<Map<String, Value>, Failure> {
    let mut outputs: Map<String, Value> = read_lines(file, owner, "output")?.into_iter().collect();
    if let Some(declared) = declared {
        check_outputs(&mut outputs, declared, owner)?;
    }
    Ok(outputs)
}

fn check_outputs(
    outputs: &mut Map<String, Value>,
    declared: &BTreeMap<String, Param>,
    owner: &str,
) -> Result<(), Failure> {
    for (name, value) in outputs.iter() {
        let Some(param) = declared.get(name) else {
            return Err(Failure::Step(format!(
                "{owner}: output {name:?}: not declared by the function's spec"
            )));
        };
        if !param.kind.admits(value) {
            return Err(Failure::Step(format!(
                "{owner}: output {name:?}: expected a {}, got a {}",
                param.kind.name(),
                type_name(value)
            )));
        }
    }
    for (name, param) in declared {
        if outputs.contains_key(name) {
            continue;
        }
        match &param.default {
            Some(default) => {
                outputs.insert(name.clone(), default.clone());
            }
            None => {
                return Err(Failure::Step(format!(
                    "{owner}: output {name:?}: declared by the function's spec but not set"
                )))
            }
        }
    }
    Ok(())
}

fn read_exports(file: &Path, owner: &str) -> Result<BTreeMap<String, String>, Failure> {
    let mut exports = BTreeMap::new();
    for (name, value) in read_lines(file, owner, "export")? {
        let text = definition::scalar_text(&value).ok_or_else(|| {
            Failure::Step(format!(
                "{owner}: export {name:?}: must be a string, number or boolean, not {}",
                type_name(&value)
            ))
        })?;
        exports.insert(name, text);
    }
    Ok(exports)
}

/// A JSON value as `google.protobuf.Value`.
pub fn to_proto_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(key, value)| (key.clone(), to_proto_value(value)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The stage runner's output sink into a request's log.
struct OutputTo(JobOutput);

impl OutputSink for OutputTo {
    fn write(&mut self, chunk: Chunk) {
        self.0.write(chunk.kind, &chunk.data);
    }

    fn finish(&mut self) {
        self.0.end_process();
    }
}
