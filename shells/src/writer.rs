//! The bash / sh script writer: upstream's `BashWriter` primitives, line for line.

use crate::escape::{go_quote, posix_shell_escape, shell_escape};

pub use runner_core::log::{ANSI_BOLD_GREEN, ANSI_CLEAR, ANSI_RESET, ANSI_YELLOW};

/// Makes bash exit 1 on SIGTERM instead of printing the script it was evaluating.
const EXIT_ON_TERM: &str = "trap 'exit 1' TERM";

/// Upstream's Kubernetes-mode start line and EXIT trap (`shells/bash.go`), each also carrying
/// the stage's nonce, read from the environment and unset before the body runs.
const STAGE_MARKERS: &str = r#"runner_stage_nonce="${RUNNER_STAGE_NONCE:-}"
unset RUNNER_STAGE_NONCE
start_json="{\"script\": \"$0\", \"nonce\": \"$runner_stage_nonce\"}"
echo "$start_json"
runner_script_trap() {
	exit_code=$?
	out_json="{\"command_exit_code\": $exit_code, \"script\": \"$0\", \"nonce\": \"$runner_stage_nonce\"}"

	echo ""
	echo "$out_json"
	exit 0
}

trap runner_script_trap EXIT
"#;

/// The credential helper that answers git with the job token from the environment.
const CRED_HELPER: &str =
    "!f(){ if [ \"$1\" = \"get\" ] ; then echo \"password=${CI_JOB_TOKEN}\" ; fi ; } ; f";

pub struct BashWriter {
    buffer: String,
    indent: usize,
    /// Consecutive `rm -f` targets, written as one `rm` (one process instead of one each) when
    /// anything else is written. Same effect as upstream's one `rm -f` per file.
    pending_rm: Vec<String>,
    /// `bash` or `sh`; empty for no shebang.
    pub shell: String,
    pub temporary_path: String,
    pub check_for_errors: bool,
    pub legacy_eval: bool,
    pub posix_escape: bool,
    /// See [`BashWriter::with_private_tmp`].
    pub private_tmp: bool,
    /// Print the JSON stage markers (see [`runner_core::executor::ExecutorDefaults::stage_markers`]).
    pub stage_markers: bool,
}

fn double_quote(text: &str) -> String {
    format!("\"{text}\"")
}

impl BashWriter {
    pub fn new(shell: &str, temporary_path: &str) -> Self {
        Self {
            buffer: String::new(),
            indent: 0,
            pending_rm: Vec::new(),
            shell: shell.to_string(),
            temporary_path: temporary_path.to_string(),
            check_for_errors: false,
            legacy_eval: false,
            posix_escape: false,
            private_tmp: false,
            stage_markers: false,
        }
    }

    pub fn escape(&self, text: &str) -> String {
        if self.posix_escape {
            posix_shell_escape(text)
        } else {
            shell_escape(text)
        }
    }

    pub fn line(&mut self, text: &str) {
        self.flush_rm();
        self.raw_line(text);
    }

    fn raw_line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.buffer.push_str("  ");
        }
        self.buffer.push_str(text);
        self.buffer.push('\n');
    }

    pub fn check_for_errors(&mut self) {
        if self.check_for_errors {
            self.line("_runner_exit_code=$?; if [ $_runner_exit_code -ne 0 ]; then exit $_runner_exit_code; fi");
        }
    }

    fn build_command(
        &self,
        quote: impl Fn(&str) -> String,
        command: &str,
        args: &[&str],
    ) -> String {
        let mut parts = vec![self.escape(command)];
        parts.extend(args.iter().map(|arg| quote(arg)));
        parts.join(" ")
    }

    pub fn command(&mut self, command: &str, args: &[&str]) {
        let line = self.build_command(|arg| self.escape(arg), command, args);
        self.line(&line);
        self.check_for_errors();
    }

    /// `command` with `env` set for it alone (`KEY=value command args`): a secret passed this
    /// way is in the command's environment, readable by its user only, not in its argument
    /// list, which every local user sees in `ps`.
    pub fn command_with_env(&mut self, env: &[(&str, &str)], command: &str, args: &[&str]) {
        let mut line: Vec<String> = env
            .iter()
            .map(|(key, value)| format!("{key}={}", self.escape(value)))
            .collect();
        line.push(self.build_command(|arg| self.escape(arg), command, args));
        self.line(&line.join(" "));
        self.check_for_errors();
    }

    /// Arguments in plain double quotes, so `$PWD` and friends expand.
    pub fn command_arg_expand(&mut self, command: &str, args: &[&str]) {
        let line = self.build_command(double_quote, command, args);
        self.line(&line);
        self.check_for_errors();
    }

    pub fn command_with_stdin(
        &mut self,
        best_effort: bool,
        stdin: &str,
        command: &str,
        args: &[&str],
    ) {
        let producer = self.build_command(|arg| self.escape(arg), "echo", &[stdin]);
        let consumer = self.build_command(|arg| self.escape(arg), command, args);
        let line = format!("{producer} | {consumer}");
        if best_effort {
            self.line(&format!("{line} || true"));
            return;
        }
        self.line(&line);
        self.check_for_errors();
    }

    pub fn setup_git_cred_helper(&mut self, conf_file: &str, section: &str, user: &str) {
        let helper_section = self.escape(&format!("{section}.helper"));
        let user_section = self.escape(&format!("{section}.username"));
        let conf = double_quote(conf_file);
        let helper = self.escape(CRED_HELPER);
        self.line(&format!(
            "git config -f {conf} --replace-all {helper_section} \"\" && git config -f {conf} --add {helper_section} {helper} && git config -f {conf} {user_section} {user}"
        ));
        self.check_for_errors();
    }

    pub fn absolute(&self, dir: &str) -> String {
        if dir.starts_with('/') || dir.starts_with("$PWD") {
            dir.to_string()
        } else {
            runner_core::dirs::join_path(&["$PWD", dir])
        }
    }

    pub fn tmp_file(&self, name: &str) -> String {
        self.absolute(&runner_core::dirs::join_path(&[&self.temporary_path, name]))
    }

    /// Makes the temporary directory readable by the job's user only when it is created
    /// (`private`): on a shared host other local users must not read the file variables
    /// and the git config with the job token that live there.
    pub fn with_private_tmp(mut self, private: bool) -> Self {
        self.private_tmp = private;
        self
    }

    fn make_tmp_dir(&self) -> String {
        let tmp = go_quote(&self.temporary_path);
        let parent = std::path::Path::new(&self.temporary_path)
            .parent()
            .map(|parent| parent.to_string_lossy().into_owned())
            .filter(|parent| !parent.is_empty());
        match (self.private_tmp, parent) {
            // Only the temporary directory itself is private: its parents (the builds
            // directory and the project's path) keep the umask, as other accounts may need
            // to reach the project.
            (true, Some(parent)) => {
                format!(
                    "mkdir -p {} && (umask 077 && mkdir -p {tmp})",
                    go_quote(&parent)
                )
            }
            (true, None) => format!("(umask 077 && mkdir -p {tmp})"),
            (false, _) => format!("mkdir -p {tmp}"),
        }
    }

    /// Makes an existing temporary directory private too (one left by an earlier runner).
    pub fn restrict_tmp_dir(&mut self) {
        if self.private_tmp {
            let tmp = go_quote(&self.temporary_path);
            self.line(&format!("chmod 700 {tmp} 2>/dev/null || :"));
        }
    }

    pub fn variable(&mut self, key: &str, value: &str, file: bool) {
        if file {
            let file_path = self.tmp_file(key);
            let make = self.make_tmp_dir();
            self.line(&make);
            let escaped = self.escape(value);
            // Readable by the job's user only (upstream leaves them to the umask).
            self.line(&format!(
                "(umask 077; printf '%s' {escaped} > {})",
                go_quote(&file_path)
            ));
            let key = self.escape(key);
            self.line(&format!("export {key}={}", go_quote(&file_path)));
        } else {
            let value = if value.starts_with(&self.temporary_path) {
                self.absolute(value)
            } else {
                value.to_string()
            };
            let line = format!("export {}={}", self.escape(key), self.escape(&value));
            self.line(&line);
        }
    }

    pub fn export_raw(&mut self, name: &str, value: &str) {
        let line = format!("export {}={}", self.escape(name), double_quote(value));
        self.line(&line);
    }

    /// Loads `GITLAB_ENV`. Upstream runs `mkdir -p` and `touch` here in every stage; the same
    /// effect with shell builtins saves two processes per stage.
    pub fn source_env(&mut self, path: &str) {
        let tmp = go_quote(&self.temporary_path);
        let make = self.make_tmp_dir();
        self.line(&format!("[ -d {tmp} ] || {{ {make}; }}"));
        self.line(&format!(": >> {}", go_quote(path)));
        self.line(&format!(
            "while read -r line; do export \"$line\"; done < {}",
            go_quote(path)
        ));
    }

    /// A here-doc `KEY="value"` file, sorted by key; invalid keys dropped. Returns its path.
    pub fn dot_env_variables(&mut self, base_name: &str, variables: &[(String, String)]) -> String {
        let path = self.tmp_file(base_name);
        let mut sorted: Vec<&(String, String)> = variables
            .iter()
            .filter(|(key, _)| runner_core::variables::is_variable_name(key))
            .collect();
        sorted.sort();
        // The delimiter is quoted so the shell expands nothing in the values: a cache key
        // built from a branch name such as `feature-$(id)` stays text. (Upstream's here-doc is
        // unquoted and runs it.) The escaping above removes newlines, so no value can end the
        // here-doc early.
        let mut text = format!("cat << 'EOF' > {path}\n");
        for (key, value) in sorted {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
                .replace('\r', "\\r");
            text.push_str(&format!("{key}=\"{value}\"\n"));
        }
        text.push_str("EOF\n");
        self.line(&text);
        path
    }

    pub fn if_directory(&mut self, path: &str) {
        self.line(&format!("if [ -d {} ]; then", go_quote(path)));
        self.indent += 1;
    }

    pub fn if_file(&mut self, path: &str) {
        self.line(&format!("if [ -e {} ]; then", go_quote(path)));
        self.indent += 1;
    }

    pub fn if_file_readable(&mut self, path: &str) {
        self.line(&format!("if [ -r {} ]; then", go_quote(path)));
        self.indent += 1;
    }

    pub fn if_cmd(&mut self, command: &str, args: &[&str]) {
        let line = self.build_command(|arg| self.escape(arg), command, args);
        self.line(&format!("if {line} >/dev/null 2>&1 ; then"));
        self.indent += 1;
    }

    pub fn if_cmd_with_output(&mut self, command: &str, args: &[&str]) {
        let line = self.build_command(|arg| self.escape(arg), command, args);
        self.line(&format!("if {line} ; then"));
        self.indent += 1;
    }

    pub fn if_cmd_with_output_arg_expand(&mut self, command: &str, args: &[&str]) {
        let line = self.build_command(double_quote, command, args);
        self.line(&format!("if {line} ; then"));
        self.indent += 1;
    }

    /// Opens an `if` whose body runs when the `git` on the job's host is at least `version`
    /// (dotted numbers, compared field by field as numbers); announces it in the log.
    /// Close it with [`BashWriter::else_`] / [`BashWriter::end_if`]. The check happens in the
    /// script, as upstream's does: the host's git is only known there.
    pub fn if_git_version_is_at_least(&mut self, version: &str) {
        self.line(r#"current_ver="$(git version|cut -d ' ' -f 3)""#);
        self.line(&format!("required_ver={}", go_quote(version)));
        self.line(
            r#"minimum_ver="$(printf '%s\n%s' "$required_ver" "$current_ver" | sort -t '.' -k 1,1n -k 2,2n -k 3,3n | sed -n '1p')""#,
        );
        self.line(r#"if [ "$minimum_ver" = "$required_ver" ]; then"#);
        // Upstream prints the notice before indenting the body; kept for identical scripts.
        self.print(&format!("Git version at least {}", go_quote(version)));
        self.indent += 1;
    }

    pub fn else_(&mut self) {
        self.flush_rm();
        self.indent = self.indent.saturating_sub(1);
        self.line("else");
        self.indent += 1;
    }

    pub fn end_if(&mut self) {
        self.flush_rm();
        self.indent = self.indent.saturating_sub(1);
        self.line("fi");
    }

    pub fn cd(&mut self, path: &str) {
        self.command("cd", &[path]);
    }

    pub fn mkdir(&mut self, path: &str) {
        self.command("mkdir", &["-p", path]);
    }

    pub fn mk_tmp_dir(&mut self, name: &str) -> String {
        let path = runner_core::dirs::join_path(&[&self.temporary_path, name]);
        self.mkdir(&path);
        path
    }

    pub fn rm_dir(&mut self, path: &str) {
        self.if_directory(path);
        self.command_arg_expand("chmod", &["-R", "u+rwX", path]);
        self.end_if();
        self.command_arg_expand("rm", &["-r", "-f", path]);
    }

    pub fn rm_file(&mut self, path: &str) {
        self.pending_rm.push(path.to_string());
    }

    fn flush_rm(&mut self) {
        if self.pending_rm.is_empty() {
            return;
        }
        let paths = std::mem::take(&mut self.pending_rm);
        let mut args = vec!["-f"];
        args.extend(paths.iter().map(String::as_str));
        let line = self.build_command(double_quote, "rm", &args);
        self.raw_line(&line);
        self.check_for_errors();
    }

    pub fn rm_files_recursive(&mut self, path: &str, name: &str) {
        self.if_directory(path);
        self.line(&format!(
            "et='+' ; find /dev/null -exec true {{}} + 2>/dev/null || et=';' ; find {} -name {} -type f -exec rm -f {{}} \"${{et}}\"",
            go_quote(path),
            go_quote(name)
        ));
        self.end_if();
    }

    pub fn rm_dirs_recursive(&mut self, path: &str, name: &str) {
        self.if_directory(path);
        self.line(&format!(
            "et='+' ; find /dev/null -exec true {{}} + 2>/dev/null || et=';' ; find {} -name {} -type d -depth -exec rm -rf -- {{}} \"${{et}}\"",
            go_quote(path),
            go_quote(name)
        ));
        self.end_if();
    }

    fn colored_echo(&mut self, text: String) {
        let line = format!("echo {}", self.escape(&text));
        self.line(&line);
    }

    /// A message in the terminal's default colour (upstream's `Printf`): a colour reset, then
    /// the text.
    pub fn print(&mut self, text: &str) {
        self.colored_echo(format!("{ANSI_RESET}{text}"));
    }

    pub fn notice(&mut self, text: &str) {
        self.colored_echo(format!("{ANSI_BOLD_GREEN}{text}{ANSI_RESET}"));
    }

    pub fn warning(&mut self, text: &str) {
        self.colored_echo(format!("{ANSI_YELLOW}{text}{ANSI_RESET}"));
    }

    pub fn empty_line(&mut self) {
        self.line("echo");
    }

    pub fn section_start(&mut self, id: &str, command: &str, options: &[&str]) {
        let options = if options.is_empty() {
            String::new()
        } else {
            format!("[{}]", options.join(","))
        };
        let title = self.escape(&format!("{ANSI_BOLD_GREEN}{command}{ANSI_RESET}"));
        self.line(&format!(
            "printf '%b\\n' section_start:$(awk 'BEGIN{{srand(); print srand()}}'):section_{id}{options}\r{ANSI_CLEAR}{title}"
        ));
    }

    pub fn section_end(&mut self, id: &str) {
        self.line(&format!(
            "printf '%b\\n' section_end:$(awk 'BEGIN{{srand(); print srand()}}'):section_{id}\r{ANSI_CLEAR}"
        ));
    }

    /// Wraps the body in upstream's envelope: shebang, TERM trap, pipefail/errexit, the body
    /// evaluated in a subshell with stdin from /dev/null, `exit 0`.
    pub fn finish(mut self, trace: bool) -> String {
        self.flush_rm();
        let mut out = String::new();
        if !self.shell.is_empty() {
            out.push_str(&format!("#!/usr/bin/env {}\n\n", self.shell));
        }
        out.push_str(EXIT_ON_TERM);
        out.push_str("\n\n");
        if self.stage_markers {
            out.push_str(STAGE_MARKERS);
        }
        if trace {
            out.push_str("set -o xtrace\n");
        }
        out.push_str(
            "case \"$(set -o)\" in *\"pipefail\"*) set -o pipefail;; esac; set -o errexit\n",
        );
        out.push_str("set +o noclobber\n");
        let body = self.escape(&self.buffer);
        if self.legacy_eval {
            out.push_str(&format!(": | eval {body}\n"));
        } else {
            out.push_str(&format!("({EXIT_ON_TERM}; eval {body}) < /dev/null\n"));
        }
        out.push_str("exit 0\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_git_version_check_compares_each_field_as_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join("git");
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        for (reported, recent) in [
            ("2.49", true),
            ("2.49.0", true),
            ("2.49.1.windows.1", true),
            ("2.50.0", true),
            ("2.100.1", true),
            ("3.0.0", true),
            ("2.48.9", false),
            ("2.5.0", false),
            ("2.4.90", false),
            ("1.99.99", false),
        ] {
            std::fs::write(&git, format!("#!/bin/sh\necho 'git version {reported}'\n")).unwrap();
            std::fs::set_permissions(&git, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            for shell in ["bash", "sh"] {
                let mut writer = BashWriter::new(shell, "/nonexistent");
                writer.posix_escape = shell == "sh";
                writer.if_git_version_is_at_least("2.49");
                writer.line("echo recent");
                writer.else_();
                writer.line("echo old");
                writer.end_if();
                let output = std::process::Command::new(shell)
                    .arg("-c")
                    .arg(writer.finish(false))
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success(), "{shell} {reported}: {output:?}");
                let expected = if recent {
                    format!("{ANSI_RESET}Git version at least \"2.49\"\nrecent\n")
                } else {
                    "old\n".to_string()
                };
                assert_eq!(text, expected, "{shell} {reported}");
            }
        }
    }

    #[test]
    fn dot_env_values_are_written_literally_under_bash_and_sh() {
        // Security probe finding 6: the unquoted here-doc ran `$(…)` and backticks in values,
        // so a branch named `feature-$(id)` used in a cache key ran `id`.
        for shell in ["bash", "sh"] {
            let dir = tempfile::tempdir().unwrap();
            let tmp = dir.path().join("tmp");
            std::fs::create_dir(&tmp).unwrap();
            let marker = dir.path().join("ran");
            let value = format!(
                "feature-$(touch {m})-`touch {m}`-${{HOME}}-\\\"q\\\"",
                m = marker.display()
            );
            let mut writer = BashWriter::new(shell, &tmp.display().to_string());
            writer.posix_escape = shell == "sh";
            let path = writer.dot_env_variables("env", &[("CACHE_METADATA".into(), value.clone())]);
            let script = writer.finish(false);
            let status = std::process::Command::new(shell)
                .arg("-c")
                .arg(&script)
                .status()
                .unwrap();
            assert!(status.success(), "{shell}");
            assert!(!marker.exists(), "{shell} ran a command from the value");
            let written = std::fs::read_to_string(&path).unwrap();
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            assert_eq!(
                written,
                format!("CACHE_METADATA=\"{escaped}\"\n"),
                "{shell}"
            );
        }
    }

    #[test]
    fn stage_markers_report_the_exit_status_with_the_nonce_and_exit_zero() {
        assert!(STAGE_MARKERS.contains(runner_core::executor::STAGE_NONCE_VARIABLE));
        for shell in ["bash", "sh"] {
            let dir = tempfile::tempdir().unwrap();
            let mut writer = BashWriter::new(shell, &dir.path().display().to_string());
            writer.posix_escape = shell == "sh";
            writer.stage_markers = true;
            writer.line("echo \"nonce seen by the job: ${RUNNER_STAGE_NONCE:-none}\"");
            writer.line("exit 3");
            let script = dir.path().join("step_script");
            std::fs::write(&script, writer.finish(false)).unwrap();
            let output = std::process::Command::new(shell)
                .arg(&script)
                .env("RUNNER_STAGE_NONCE", "n0nce")
                .output()
                .unwrap();
            assert!(output.status.success(), "{shell}: {output:?}");
            let path = script.display();
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                format!(
                    "{{\"script\": \"{path}\", \"nonce\": \"n0nce\"}}\nnonce seen by the job: none\n\n{{\"command_exit_code\": 3, \"script\": \"{path}\", \"nonce\": \"n0nce\"}}\n"
                ),
                "{shell}"
            );
        }
    }
}
