//! The user script steps (`script`, `release`, ...) with the runner's pre/post build hooks, and
//! the command echoing they share with after_script and the get_sources hooks.

use runner_core::feature_flags::FeatureFlag;
use runner_core::script::ScriptError;
use runner_core::stage::Stage;

use super::{write_exports, Info};
use crate::writer::BashWriter;

/// Echoes and runs user commands (`writeCommands`).
pub(super) fn write_commands(
    w: &mut BashWriter,
    info: &Info<'_>,
    prefix: &str,
    commands: &[String],
) {
    for (index, command) in commands.iter().enumerate() {
        let command = command.trim();
        if command.is_empty() {
            w.empty_line();
        } else if let Some((first_line, _)) = command.split_once('\n') {
            if info.flag(FeatureFlag::ScriptSections) && info.build.job.features.trace_sections {
                let section = format!("{prefix}_{index}");
                w.section_start(
                    &section,
                    &format!("$ {command}"),
                    &["hide_duration=true", "collapsed=true"],
                );
                w.section_end(&section);
            } else {
                w.notice(&format!("$ {first_line} # collapsed multi-line command"));
            }
        } else {
            w.notice(&format!("$ {command}"));
        }
        w.line(command);
        w.check_for_errors();
    }
}

pub(super) fn write_user_script(
    w: &mut BashWriter,
    info: &Info<'_>,
    stage: &Stage,
) -> Result<bool, ScriptError> {
    let Some(step) = info
        .build
        .job
        .steps
        .iter()
        .find(|step| step.name != "after_script" && Stage::step(&step.name) == *stage)
    else {
        return Ok(false);
    };
    write_exports(w, info, false);
    w.cd(&info.project_dir);
    let hooks = &info.build.runner.hooks;
    if !hooks.pre_build_script.is_empty() {
        write_commands(
            w,
            info,
            "pre_build_script",
            std::slice::from_ref(&hooks.pre_build_script),
        );
    }
    let script: Vec<String> = if step.name == "release" {
        step.script
            .iter()
            .map(|line| info.variables.expand(line))
            .collect()
    } else {
        step.script.clone()
    };
    write_commands(w, info, "script_step", &script);
    if !hooks.post_build_script.is_empty() {
        write_commands(
            w,
            info,
            "post_build_script",
            std::slice::from_ref(&hooks.post_build_script),
        );
    }
    Ok(true)
}
