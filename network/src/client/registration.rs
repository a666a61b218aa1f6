//! Registering and removing the runner: `POST runners`, `POST runners/verify`, `DELETE runners`
//! and `DELETE runners/managers`; and rotating its token, `POST
//! runners/reset_authentication_token`.

use reqwest::StatusCode;
use runner_core::secret::Secret;
use serde_json::{json, Value};

use super::payload::message_from_body;
use super::{
    correlation_id, error_chain, GitlabClient, RegisterParameters, RegisteredRunner,
    ResetTokenResult, VerifyResult, VersionInfo,
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
                200 => {
                    let answer: Value = response.json().await.unwrap_or(Value::Null);
                    VerifyResult::Valid {
                        id: answer["id"].as_i64().unwrap_or(0),
                        token_expires_at: answer["token_expires_at"]
                            .as_str()
                            .filter(|at| !at.is_empty() && !at.starts_with("0001-01-01"))
                            .map(str::to_string),
                    }
                }
                403 => VerifyResult::Invalid,
                other => VerifyResult::Unknown(format!("unexpected status {other}")),
            },
            Err(error) => VerifyResult::Unknown(error_chain(&error)),
        }
    }

    /// Resets the runner authentication token: `POST runners/reset_authentication_token` with
    /// the current token, or, with a personal access token, `POST
    /// runners/<id>/reset_authentication_token` authenticated by it (`PRIVATE-TOKEN`).
    pub async fn reset_token(
        &self,
        token: &Secret<String>,
        runner_id: i64,
        personal_access_token: Option<&Secret<String>>,
    ) -> ResetTokenResult {
        let (path, body) = match personal_access_token {
            None => (
                "runners/reset_authentication_token".to_string(),
                json!({"token": token.expose()}),
            ),
            Some(_) => (
                format!("runners/{runner_id}/reset_authentication_token"),
                json!({}),
            ),
        };
        let url = self.url(&path);
        let request_id = correlation_id();
        let sent = retry::send(|| {
            let mut request = self
                .request(reqwest::Method::POST, &url, &request_id)
                .header("Accept", "application/json")
                .json(&body);
            match personal_access_token {
                Some(pat) => request = request.header("PRIVATE-TOKEN", pat.expose()),
                None => request = request.header("RUNNER-TOKEN", token.expose()),
            }
            request
        })
        .await;
        let response = match sent {
            Ok((response, _)) => response,
            Err(error) => return ResetTokenResult::Failed(error_chain(&error)),
        };
        let status = response.status();
        let status_text = status.to_string();
        match status.as_u16() {
            201 => {
                #[derive(serde::Deserialize)]
                struct Answer {
                    token: String,
                    #[serde(default)]
                    token_expires_at: Option<String>,
                }
                match response.json::<Answer>().await {
                    Ok(answer) if !answer.token.is_empty() => ResetTokenResult::Reset {
                        token: Secret::new(answer.token),
                        expires_at: answer
                            .token_expires_at
                            .filter(|at| !at.is_empty() && !at.starts_with("0001-01-01")),
                    },
                    Ok(_) => ResetTokenResult::Failed("the answer holds no token".into()),
                    Err(error) => ResetTokenResult::Failed(error_chain(&error)),
                }
            }
            403 => ResetTokenResult::Forbidden(status_text),
            400..=499 => ResetTokenResult::ClientError(status_text),
            _ => ResetTokenResult::Failed(status_text),
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
