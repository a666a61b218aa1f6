//! What goes into each container's plan from the job: the build container's environment
//! (the job's public and internal variables, file variables as their paths; secret
//! variables stay out of the pod spec, the stage scripts export them), and each service's
//! (the same, then its own variables expanded against the job's and its own), image,
//! entrypoint (`command`) and command (`args`).

use runner_core::job::Image;
use runner_core::variables::{JobVariable, Variables};

use crate::pod::ContainerPlan;

/// The value a container sees: a file variable's path, else the value as sent.
fn visible_value(variables: &Variables, variable: &JobVariable) -> String {
    match (variable.file, variables.file_dir()) {
        (true, Some(dir)) => format!("{dir}/{}", variable.key),
        _ => variable.value.clone(),
    }
}

/// Upstream's `PublicOrInternal`: the build container's environment.
pub fn build_environment(variables: &Variables) -> Vec<(String, String)> {
    variables
        .iter()
        .filter(|variable| variable.public || variable.internal)
        .map(|variable| (variable.key.clone(), visible_value(variables, variable)))
        .collect()
}

/// Upstream's `GetServiceVariables`: the build environment, then the service's own
/// variables expanded against the job's and the service's.
pub fn service_environment(variables: &Variables, service: &Image) -> Vec<(String, String)> {
    let mut source = variables.clone();
    source.extend(service.variables.iter().cloned());
    let mut environment = build_environment(variables);
    environment.extend(service.variables.iter().map(|variable| {
        let value = if variable.raw {
            variable.value.clone()
        } else {
            source.expand(&variable.value)
        };
        (variable.key.clone(), value)
    }));
    environment
}

/// A service container's plan: its image (the name, expanded), its entrypoint as `command`
/// and its command as `args` (the image's own when absent), its environment.
pub fn service_plan(name: &str, service: &Image, variables: &Variables) -> ContainerPlan {
    ContainerPlan {
        name: name.to_string(),
        image: variables.expand(&service.name),
        command: service.entrypoint.clone(),
        args: service.command.clone(),
        env: service_environment(variables, service),
        ports: service
            .ports
            .iter()
            .filter_map(|port| i32::try_from(port.number).ok())
            .collect(),
        ..ContainerPlan::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables() -> Variables {
        let mut secret = JobVariable::new("TOKEN", "s3cr3t");
        secret.public = false;
        let mut file = JobVariable::new("KUBECONFIG_FILE", "contents").file();
        file.public = true;
        Variables::new(vec![
            JobVariable::new("CI_PROJECT_NAME", "demo"),
            secret,
            file,
            JobVariable::internal("CI_BUILDS_DIR", "/builds"),
        ])
        .with_file_dir("/builds/demo.tmp")
    }

    #[test]
    fn the_build_environment_leaves_secrets_out_and_gives_file_paths() {
        let env = build_environment(&variables());
        assert_eq!(
            env,
            [
                ("CI_PROJECT_NAME".to_string(), "demo".to_string()),
                (
                    "KUBECONFIG_FILE".to_string(),
                    "/builds/demo.tmp/KUBECONFIG_FILE".to_string()
                ),
                ("CI_BUILDS_DIR".to_string(), "/builds".to_string()),
            ]
        );
    }

    #[test]
    fn a_service_gets_its_own_variables_expanded_and_its_entrypoint_as_command() {
        let service = Image {
            name: "postgres:$PG".into(),
            entrypoint: vec!["docker-entrypoint.sh".into()],
            command: vec!["postgres".into(), "-c".into(), "fsync=off".into()],
            variables: vec![
                JobVariable::new("PG", "16"),
                JobVariable::new("POSTGRES_DB", "${CI_PROJECT_NAME}_test"),
            ],
            ..Image::default()
        };
        let mut variables = variables();
        variables.push(JobVariable::new("PG", "16"));
        let plan = service_plan("db", &service, &variables);
        assert_eq!(plan.image, "postgres:16");
        assert_eq!(plan.command, ["docker-entrypoint.sh"]);
        assert_eq!(plan.args, ["postgres", "-c", "fsync=off"]);
        assert_eq!(
            plan.env.last(),
            Some(&("POSTGRES_DB".to_string(), "demo_test".to_string()))
        );
        assert!(!plan.env.iter().any(|(key, _)| key == "TOKEN"));
    }
}
