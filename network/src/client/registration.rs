//! Registering and removing the runner: `POST runners`, `POST runners/verify`, `DELETE runners`
//! and `DELETE runners/managers`.

use reqwest::StatusCode;
use runner_core::secret::Secret;
use serde_json::{json, Value};

use super::payload::message_from_body;
use super::{
    correlation_id, error_chain, GitlabClient, RegisterParameters, RegisteredRunner, VerifyResult,
    VersionInfo,
};
use crate::error::ClientError;
use crate::retry;

impl GitlabClient {
    /// `POST runners` (legacy registration token).
    pub async fn register(
        &self,
        registration_token: &Secret<String>,
        parameters: &RegisterParameters,
        info: &VersionInfo,
    ) -> Result<RegisteredRunner, ClientError> {
        let mut body = json!({
            "description": parameters.description,
            "maintenance_note": parameters.maintenance_note,
            "tag_list": parameters.tags.join(","),
            "run_untagged": parameters.run_untagged,
            "locked": parameters.locked,
            "maximum_timeout": parameters.maximum_timeout,
            "paused": parameters.paused,
            "info": info,
            "token": registration_token.expose(),
        });
        if !parameters.access_level.is_empty() {
            body["access_level"] = Value::String(parameters.access_level.clone());
        }
        let (response, _) = self
            .post_json(
                "runners",
                Some(registration_token.expose()),
                &body,
                &correlation_id(),
            )
            .await
            .map_err(|error| ClientError::Transport(error_chain(&error)))?;
        match response.status() {
            StatusCode::CREATED => response
                .json::<RegisteredRunner>()
                .await
                .map_err(|error| ClientError::Decode(error_chain(&error))),
            StatusCode::FORBIDDEN => Err(ClientError::Status(
                403,
                "forbidden (check registration token)".into(),
            )),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(ClientError::Status(
                    status.as_u16(),
                    message_from_body(&body),
                ))
            }
        }
    }

    /// `POST runners/verify`.
    pub async fn verify(
        &self,
        token: &Secret<String>,
        system_id: &str,
        info: &VersionInfo,
    ) -> VerifyResult {
        let body = json!({"info": info, "token": token.expose(), "system_id": system_id});
        match self
            .post_json(
                "runners/verify",
                Some(token.expose()),
                &body,
                &correlation_id(),
            )
            .await
        {
            Ok((response, _)) => match response.status().as_u16() {
                200 => VerifyResult::Valid,
                403 => VerifyResult::Invalid,
                other => VerifyResult::Unknown(format!("unexpected status {other}")),
            },
            Err(error) => VerifyResult::Unknown(error_chain(&error)),
        }
    }

    /// `DELETE runners`; `true` on 204.
    pub async fn unregister(&self, token: &Secret<String>) -> Result<bool, ClientError> {
        self.delete_runner("runners", token, json!({"token": token.expose()}))
            .await
    }

    /// `DELETE runners/managers`: unregisters only this machine's runner manager.
    pub async fn unregister_manager(
        &self,
        token: &Secret<String>,
        system_id: &str,
    ) -> Result<bool, ClientError> {
        self.delete_runner(
            "runners/managers",
            token,
            json!({"token": token.expose(), "system_id": system_id}),
        )
        .await
    }

    async fn delete_runner(
        &self,
        path: &str,
        token: &Secret<String>,
        body: Value,
    ) -> Result<bool, ClientError> {
        let url = self.url(path);
        let request_id = correlation_id();
        let (response, _) = retry::send(|| {
            self.request(reqwest::Method::DELETE, &url, &request_id)
                .header("RUNNER-TOKEN", token.expose())
                .json(&body)
        })
        .await
        .map_err(|error| ClientError::Transport(error_chain(&error)))?;
        Ok(response.status() == StatusCode::NO_CONTENT)
    }
}
