//! What an API Gateway API is made of, as far as its 5xx go: the API (REST or HTTP, by name or
//! id), its stages' variables, and the Lambda functions its integrations invoke.

use std::collections::BTreeMap;

use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::model::{Home, Resource};

use super::{ApiErrors, ApiKind};
use crate::Responder;

/// API Gateway's default integration timeout (REST APIs: at most 29 s; HTTP APIs: 30 s).
const REST_TIMEOUT_MS: i64 = 29_000;
const HTTP_TIMEOUT_MS: i64 = 30_000;
/// Pages read of one list (500 items each): an account or API with more is refused, named.
const MAX_PAGES: usize = 20;

/// The API, found.
#[derive(Clone, Debug, PartialEq)]
pub struct Api {
    pub kind: ApiKind,
    pub id: String,
    pub name: String,
}

/// One integration that invokes a Lambda function.
#[derive(Clone, Debug, PartialEq)]
pub struct Invoked {
    /// `GET /orders` (REST), `POST /checkout` (HTTP route key).
    pub route: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub timeout_ms: i64,
}

/// What the stage's integrations invoke, and what could not be resolved (another account's
/// function, a stage variable the stage does not set).
#[derive(Debug, Default)]
pub struct Integrations {
    pub invoked: Vec<Invoked>,
    pub unresolved: Vec<String>,
}

/// A list longer than a triage reads: refused, not read in part.
fn too_many(what: &str) -> String {
    format!(
        "there are more than {} {what}, more than a triage reads: run the runbooks of the functions behind the API by hand",
        MAX_PAGES * 500
    )
}

/// The same for the HTTP API lists read in one page of 500.
fn too_many_http(what: &str) -> String {
    format!(
        "there are more than 500 {what}, more than a triage reads: run the runbooks of the functions behind the API by hand"
    )
}

fn read_error(api: &str, resource: &str) -> impl Fn(AwsError) -> String {
    let (api, resource) = (api.to_string(), resource.to_string());
    move |err| {
        if err.is(FaultKind::NotFound) {
            format!("{resource} does not exist ({api})")
        } else {
            err.to_string()
        }
    }
}

impl Responder {
    /// The API the target names: by id or name, REST first unless the alarm said HTTP.
    pub(crate) async fn find_api(&self, target: &ApiErrors) -> Result<Api, String> {
        let mut found = Vec::new();
        if target.kind != Some(ApiKind::Http) {
            found.extend(self.rest_apis_named(&target.api).await?);
        }
        if target.kind != Some(ApiKind::Rest) {
            found.extend(self.http_apis_named(&target.api).await?);
        }
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!(
                "no {} API has the id or name {:?} in this account and region; check the alarm's dimensions or the payload's \"api\"",
                match target.kind {
                    Some(ApiKind::Rest) => "REST",
                    Some(ApiKind::Http) => "HTTP",
                    None => "REST or HTTP",
                },
                target.api
            )),
            many => Err(format!(
                "{} APIs answer to {:?} ({}): name it by its id",
                many.len(),
                target.api,
                many.iter()
                    .map(|api| format!("{} {}", api.kind.as_str(), api.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    async fn rest_apis_named(&self, wanted: &str) -> Result<Vec<Api>, String> {
        let mut found = Vec::new();
        let mut position = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .clients
                .apigateway
                .get_rest_apis()
                .limit(500)
                .set_position(position)
                .send()
                .await
                .map_err(|err| {
                    AwsError::from_sdk("apigateway:GET", "the REST APIs", &err).to_string()
                })?;
            found.extend(page.items().iter().filter_map(|api| {
                let (id, name) = (api.id()?, api.name().unwrap_or_default());
                (id == wanted || name == wanted).then(|| Api {
                    kind: ApiKind::Rest,
                    id: id.to_string(),
                    name: name.to_string(),
                })
            }));
            position = page.position().map(str::to_string);
            if position.is_none() {
                return Ok(found);
            }
        }
        Err(too_many("REST APIs in this region"))
    }

    async fn http_apis_named(&self, wanted: &str) -> Result<Vec<Api>, String> {
        let mut found = Vec::new();
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .clients
                .apigatewayv2
                .get_apis()
                .max_results("500")
                .set_next_token(token)
                .send()
                .await
                .map_err(|err| {
                    AwsError::from_sdk("apigateway:GET", "the HTTP APIs", &err).to_string()
                })?;
            found.extend(page.items().iter().filter_map(|api| {
                let (id, name) = (api.api_id()?, api.name().unwrap_or_default());
                (id == wanted || name == wanted).then(|| Api {
                    kind: ApiKind::Http,
                    id: id.to_string(),
                    name: name.to_string(),
                })
            }));
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
        Err(too_many("HTTP APIs in this region"))
    }

    /// The stage's variables (for integration URIs that name `${stageVariables.x}`); the stage
    /// not existing is an error naming it.
    pub(crate) async fn stage_variables(
        &self,
        api: &Api,
        stage: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let what = format!("stage {stage} of {} API {}", api.kind.as_str(), api.id);
        let variables = match api.kind {
            ApiKind::Rest => self
                .clients
                .apigateway
                .get_stage()
                .rest_api_id(&api.id)
                .stage_name(stage)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err))
                .map_err(read_error("apigateway:GET", &what))?
                .variables()
                .cloned(),
            ApiKind::Http => self
                .clients
                .apigatewayv2
                .get_stage()
                .api_id(&api.id)
                .stage_name(stage)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err))
                .map_err(read_error("apigateway:GET", &what))?
                .stage_variables()
                .cloned(),
        };
        Ok(variables.unwrap_or_default().into_iter().collect())
    }

    /// The stages' names, for an alarm on the whole API.
    pub(crate) async fn stage_names(&self, api: &Api) -> Result<Vec<String>, String> {
        let what = format!("the stages of {} API {}", api.kind.as_str(), api.id);
        let names = match api.kind {
            ApiKind::Rest => self
                .clients
                .apigateway
                .get_stages()
                .rest_api_id(&api.id)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err).to_string())?
                .item()
                .iter()
                .filter_map(|stage| stage.stage_name().map(str::to_string))
                .collect(),
            ApiKind::Http => self
                .clients
                .apigatewayv2
                .get_stages()
                .api_id(&api.id)
                .max_results("500")
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err).to_string())
                .and_then(|page| match page.next_token() {
                    Some(_) => Err(too_many_http(&format!("stages in HTTP API {}", api.id))),
                    None => Ok(page),
                })?
                .items()
                .iter()
                .filter_map(|stage| stage.stage_name().map(str::to_string))
                .collect(),
        };
        Ok(names)
    }

    /// The functions the API's integrations invoke under each stage's variables.
    pub(crate) async fn integrations(
        &self,
        api: &Api,
        stages: &[(String, BTreeMap<String, String>)],
    ) -> Result<Integrations, String> {
        let routes = match api.kind {
            ApiKind::Rest => self.rest_integrations(&api.id).await?,
            ApiKind::Http => self.http_integrations(&api.id).await?,
        };
        let home = &self.config.safety.home;
        let mut found = Integrations::default();
        for (route, uri, timeout_ms) in routes {
            for (stage, variables) in stages {
                match invoked_function(&uri, variables, home) {
                    Ok(Some((function, qualifier))) => {
                        let invoked = Invoked {
                            route: route.clone(),
                            function,
                            qualifier,
                            timeout_ms,
                        };
                        if !found.invoked.contains(&invoked) {
                            found.invoked.push(invoked);
                        }
                    }
                    Ok(None) => {}
                    Err(why) => found
                        .unresolved
                        .push(format!("{route} (stage {stage}): {why}")),
                }
            }
        }
        Ok(found)
    }

    /// (route, integration URI, timeout) of every method of a REST API.
    async fn rest_integrations(&self, id: &str) -> Result<Vec<(String, String, i64)>, String> {
        let what = format!("the resources of REST API {id}");
        let mut routes = Vec::new();
        let mut position = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .clients
                .apigateway
                .get_resources()
                .rest_api_id(id)
                .embed("methods")
                .limit(500)
                .set_position(position)
                .send()
                .await
                .map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err).to_string())?;
            for resource in page.items() {
                let path = resource.path().unwrap_or("/");
                for (verb, method) in resource.resource_methods().into_iter().flatten() {
                    let Some(integration) = method.method_integration() else {
                        continue;
                    };
                    let Some(uri) = integration.uri() else {
                        continue;
                    };
                    let timeout = i64::from(integration.timeout_in_millis());
                    routes.push((
                        format!("{verb} {path}"),
                        uri.to_string(),
                        if timeout > 0 {
                            timeout
                        } else {
                            REST_TIMEOUT_MS
                        },
                    ));
                }
            }
            position = page.position().map(str::to_string);
            if position.is_none() {
                routes.sort();
                return Ok(routes);
            }
        }
        Err(too_many(&format!("resources in REST API {id}")))
    }

    /// (route keys, integration URI, timeout) of every integration of an HTTP API.
    async fn http_integrations(&self, id: &str) -> Result<Vec<(String, String, i64)>, String> {
        let what = format!("the integrations of HTTP API {id}");
        let client = &self.clients.apigatewayv2;
        let (integrations, routes) = tokio::join!(
            client
                .get_integrations()
                .api_id(id)
                .max_results("500")
                .send(),
            client.get_routes().api_id(id).max_results("500").send()
        );
        let integrations = integrations
            .map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err).to_string())?;
        let routes =
            routes.map_err(|err| AwsError::from_sdk("apigateway:GET", &what, &err).to_string())?;
        if integrations.next_token().is_some() || routes.next_token().is_some() {
            return Err(too_many_http(&format!(
                "integrations or routes in HTTP API {id}"
            )));
        }
        let mut found = Vec::new();
        for integration in integrations.items() {
            let (Some(integration_id), Some(uri)) =
                (integration.integration_id(), integration.integration_uri())
            else {
                continue;
            };
            let target = format!("integrations/{integration_id}");
            let mut keys: Vec<&str> = routes
                .items()
                .iter()
                .filter(|route| route.target() == Some(target.as_str()))
                .filter_map(|route| route.route_key())
                .collect();
            keys.sort_unstable();
            let timeout = integration
                .timeout_in_millis()
                .map_or(HTTP_TIMEOUT_MS, i64::from);
            let route = if keys.is_empty() {
                format!("integration {integration_id}")
            } else {
                keys.join(", ")
            };
            found.push((route, uri.to_string(), timeout));
        }
        found.sort();
        Ok(found)
    }
}

/// The function an integration URI invokes: `arn:…:apigateway:…:lambda:path/2015-03-31/
/// functions/<function ARN>/invocations` (REST, HTTP) or the function's ARN itself (HTTP), with
/// `${stageVariables.x}` filled in. `None`: not a Lambda integration (HTTP, AWS service, mock).
pub fn invoked_function(
    uri: &str,
    variables: &BTreeMap<String, String>,
    home: &Home,
) -> Result<Option<(String, Option<String>)>, String> {
    let mut resolved = uri.to_string();
    while let Some(start) = resolved.find("${stageVariables.") {
        let Some(end) = resolved[start..].find('}').map(|end| start + end) else {
            return Err(format!("unterminated stage variable in {uri}"));
        };
        let name = &resolved[start + "${stageVariables.".len()..end];
        let Some(value) = variables.get(name) else {
            return Err(format!(
                "the stage sets no variable {name}, which {uri} uses"
            ));
        };
        resolved.replace_range(start..=end, value);
    }
    let arn = match resolved.split_once("/functions/") {
        Some((_, rest)) if resolved.contains(":lambda:path/") => {
            rest.strip_suffix("/invocations").unwrap_or(rest)
        }
        _ if resolved.starts_with("arn:") && resolved.contains(":lambda:") => resolved.as_str(),
        _ => return Ok(None),
    };
    match home.parse_function(arn) {
        Ok(id) => match id.resource {
            Resource::Function { function } => Ok(Some((function, None))),
            Resource::Alias { function, alias } => Ok(Some((function, Some(alias)))),
            _ => Err(format!("{arn} is not a Lambda function")),
        },
        Err(rejection) => Err(rejection.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_shared::config::Env;

    fn home() -> Home {
        Home::from_env(&Env::from_pairs(&[
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap()
    }

    #[test]
    fn integration_uris_name_their_function_and_alias() {
        let rest = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:checkout:${stageVariables.alias}/invocations";
        let variables: BTreeMap<String, String> =
            [("alias".to_string(), "live".to_string())].into();
        assert_eq!(
            invoked_function(rest, &variables, &home()),
            Ok(Some(("checkout".into(), Some("live".into()))))
        );
        let err = invoked_function(rest, &BTreeMap::new(), &home()).unwrap_err();
        assert!(err.contains("no variable alias"), "{err}");
        let http = "arn:aws:lambda:us-east-1:123456789012:function:orders";
        assert_eq!(
            invoked_function(http, &BTreeMap::new(), &home()),
            Ok(Some(("orders".into(), None)))
        );
        let elsewhere = "arn:aws:lambda:eu-west-1:123456789012:function:orders";
        assert!(invoked_function(elsewhere, &BTreeMap::new(), &home()).is_err());
        assert_eq!(
            invoked_function("https://example.com/orders", &BTreeMap::new(), &home()),
            Ok(None)
        );
    }
}
