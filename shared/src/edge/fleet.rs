//! One deployment (the hub) acting in several accounts and regions. The hub's own account acts
//! with the function's own role; every other account listed in ACCOUNTS through the
//! `RunbookAutomationSpoke` role that spoke.yaml creates there, in a role session named after the
//! event and tagged with the function, made once per account and region per invocation. Each
//! account and region gets its own member: the function built on that session's clients, with
//! the hub's audit table and keys scoped to the account and region. A spoke whose role cannot be
//! assumed fails its own reports only.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use serde_json::Value;
use tokio::sync::Mutex;

use super::answer::answer;
use super::catalog::Catalog;
use super::recognise::{Recognised, origin_of, unlisted_topic};
use crate::aws::{AwsError, FaultKind};
use crate::model::{
    FleetConfig, Home, Invocation, Origin, Outcome, Output, Rejection, Report, ResourceId,
    SafetyConfig, Trigger, TriggerInfo, TriggerKind,
};

/// The role spoke.yaml creates in every remediated account.
pub const SPOKE_ROLE: &str = "RunbookAutomationSpoke";

/// How long a spoke role session lasts: STS's shortest, as long as the longest invocation.
const SESSION_SECONDS: i32 = 900;

/// Why a place could not be reached.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "account {account} in {region} could not be reached: sts:AssumeRole of {role} failed: {message} (deploy spoke.yaml to account {account} with HubAccountId set to this deployment's account and the ExternalId it has as SPOKE_EXTERNAL_ID, or remove the account from ACCOUNTS); nothing was done there"
)]
pub struct SpokeError {
    pub account: String,
    pub region: String,
    pub role: String,
    /// What STS said.
    pub message: String,
    pub kind: FaultKind,
}

/// The members made for one invocation: at most one role session per account and region, and
/// one attempt (a place that failed is not tried again within the invocation).
pub struct Sessions<'a, F> {
    fleet: &'a Fleet<F>,
    function: &'static str,
    session_name: String,
    made: Mutex<Made<F>>,
}

impl<F> Sessions<'_, F> {
    pub fn fleet(&self) -> &Fleet<F> {
        self.fleet
    }

    /// The function in `place`: the hub's own in its own region, anywhere else through the
    /// spoke role there (in the hub's own account too: its role is written for its region).
    pub async fn member(&self, place: &Home) -> Result<Arc<F>, SpokeError> {
        let fleet = self.fleet;
        if *place == fleet.hub_home {
            return Ok(fleet.hub.clone());
        }
        let key = (place.account.clone(), place.region.clone());
        let mut made = self.made.lock().await;
        if let Some(member) = made.get(&key) {
            return member.clone();
        }
        let member = self.assume(place).await.map(|credentials| {
            let sdk = fleet
                .sdk
                .to_builder()
                .region(aws_config::Region::new(place.region.clone()))
                .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(
                    credentials,
                ))
                .build();
            Arc::new((fleet.build)(&sdk, place.clone()))
        });
        made.insert(key, member.clone());
        member
    }

    /// A session of the spoke role of `place`'s account.
    async fn assume(&self, place: &Home) -> Result<aws_sdk_sts::config::Credentials, SpokeError> {
        use aws_sdk_sts::types::Tag;
        let role = format!(
            "arn:{}:iam::{}:role/{SPOKE_ROLE}",
            place.partition, place.account
        );
        let api = "sts:AssumeRole";
        let failed = |kind, message: String| SpokeError {
            account: place.account.clone(),
            region: place.region.clone(),
            role: role.clone(),
            message,
            kind,
        };
        let invalid = |message: String| failed(FaultKind::Invalid, message);
        let tag = |key: &str, value: &str| {
            Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|err| invalid(err.to_string()))
        };
        let answer = self
            .fleet
            .sts
            .assume_role()
            .role_arn(&role)
            .role_session_name(&self.session_name)
            .set_external_id(self.fleet.config.external_id.clone())
            .duration_seconds(SESSION_SECONDS)
            .tags(tag("runbook-function", self.function)?)
            .tags(tag("runbook-session", &self.session_name)?)
            .send()
            .await
            .map_err(|err| {
                let err = AwsError::from_sdk(api, &role, &err);
                failed(err.kind, err.message)
            })?;
        let credentials = answer
            .credentials
            .ok_or_else(|| invalid("STS answered no credentials".into()))?;
        Ok(aws_sdk_sts::config::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            Some(credentials.session_token),
            std::time::SystemTime::try_from(credentials.expiration).ok(),
            SPOKE_ROLE,
        ))
    }
}

/// A role session name after the event: STS allows 2–64 of `[\w+=.@-]` (and the session tag
/// that repeats it no `,`).
fn session_name(event_id: &str) -> String {
    let cleaned: String = event_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("runbook-{cleaned}");
    name.chars().take(64).collect()
}

/// The function in every account and region the deployment acts in.
pub struct Fleet<F> {
    config: FleetConfig,
    hub_home: Home,
    hub: Arc<F>,
    /// The hub's SDK configuration: its region for STS, and the base of every place's.
    sdk: SdkConfig,
    sts: aws_sdk_sts::Client,
    build: Build<F>,
}

/// How a member is built from a place's SDK configuration.
type Build<F> = Box<dyn Fn(&SdkConfig, Home) -> F + Send + Sync>;

/// The members made in one invocation, or why a place could not be reached, by account and
/// region.
type Made<F> = HashMap<(String, String), Result<Arc<F>, SpokeError>>;

impl<F> Fleet<F> {
    /// `build` makes the function for one account and region from that place's SDK
    /// configuration (the hub's own, or a spoke role session's).
    pub fn new(
        config: FleetConfig,
        hub_home: Home,
        sdk: &SdkConfig,
        build: impl Fn(&SdkConfig, Home) -> F + Send + Sync + 'static,
    ) -> Self {
        let hub = Arc::new(build(sdk, hub_home.clone()));
        Self {
            config,
            hub_home,
            hub,
            sdk: sdk.clone(),
            sts: aws_sdk_sts::Client::new(sdk),
            build: Box::new(build),
        }
    }

    /// A function that acts in every place: `build` makes it from that place's safety
    /// configuration (`SafetyConfig::at`), that place's SDK configuration and the hub's (whose
    /// audit table every place shares).
    pub fn of(
        config: FleetConfig,
        safety: SafetyConfig,
        sdk: &SdkConfig,
        build: impl Fn(SafetyConfig, &SdkConfig, &SdkConfig) -> F + Send + Sync + 'static,
    ) -> Self {
        let hub = sdk.clone();
        let places = config.clone();
        let home = safety.home.clone();
        Self::new(config, home, sdk, move |place_sdk, place| {
            build(safety.at(place, &places), place_sdk, &hub)
        })
    }

    pub fn hub_home(&self) -> &Home {
        &self.hub_home
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The members made for one invocation, whose role sessions are named after `event_id`.
    pub fn sessions(&self, function: &'static str, event_id: &str) -> Sessions<'_, F> {
        Sessions {
            fleet: self,
            function,
            session_name: session_name(event_id),
            made: Mutex::new(HashMap::new()),
        }
    }
}

impl<F: Catalog> Fleet<F> {
    /// Answers one event with the member of the account and region it comes from. A person's
    /// decision on a plan goes where the plan was made; a control payload is the hub's (the
    /// switch lives in its audit table); a schedule runs in every place when the catalog's
    /// `SCHEDULE_EVERYWHERE`, each place failing alone.
    // Over 80 lines: one match over where an event goes (decision, control, alarm, handoff,
    // schedule), each arm naming the account and region it trusts and why.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Output {
        let function = F::NAME;
        let mut recognised = Recognised::of(event);
        let trigger = recognised.trigger.clone();
        // An alarm notification from a topic the deployment does not take is refused before
        // any role is assumed (the member would refuse it too).
        if let Some(refused) = trigger
            .as_ref()
            .ok()
            .and_then(|trigger| unlisted_topic(trigger, &self.hub.safety().config.alarm_topics))
        {
            let info = TriggerInfo {
                kind: TriggerKind::AlarmSns,
                name: None,
                event_id: None,
            };
            return invocation
                .timed(Report::rejected(function, info, refused.0))
                .into();
        }
        // The switch lives in the hub's audit table; a control's `account` names the switch.
        if !self.config.is_fleet() || matches!(trigger, Ok(Trigger::Control(_))) {
            return answer(&*self.hub, recognised, invocation).await.into();
        }
        let schedule = matches!(trigger, Ok(Trigger::Schedule(_)));
        let info = trigger
            .as_ref()
            .map(|trigger| trigger.info(&invocation.request_id))
            .unwrap_or(TriggerInfo {
                kind: TriggerKind::Unknown,
                name: None,
                event_id: None,
            });
        let origin = match &trigger {
            Ok(Trigger::Approval(_)) => self.plan_origin(&recognised.event).await,
            // A person names the place beside the payload; the runbook reads the rest.
            Ok(Trigger::Manual(_)) => Ok(take_place(&mut recognised)),
            // Sent by this deployment on its own bus, for the place of the sender's target. The
            // bus takes other accounts' events too: one whose sender (which EventBridge names,
            // unforgeably, in `account`) is not the hub is refused before any role is assumed.
            Ok(Trigger::Handoff(handoff)) => match origin_of(&recognised.event).account {
                Some(sender) if sender != self.hub_home.account => Err(Rejection(format!(
                    "a Runbook Handoff from account {sender}: handoffs come only from this deployment's own account {}; nothing was done",
                    self.hub_home.account
                ))),
                _ => Ok(Origin {
                    account: handoff.account.clone(),
                    region: handoff.region.clone(),
                }),
            },
            _ => Ok(origin_of(&recognised.event)),
        };
        let place = origin.and_then(|origin| {
            self.config.admit(
                &self.hub_home,
                origin.account.as_deref(),
                origin.region.as_deref(),
            )
        });
        let place = match place {
            Ok(place) => place,
            Err(rejection) => {
                return invocation
                    .timed(Report::rejected(function, info, rejection.0))
                    .into();
            }
        };
        let sessions = self.sessions(
            function,
            info.event_id.as_deref().unwrap_or(&invocation.request_id),
        );
        if !(F::SCHEDULE_EVERYWHERE && schedule) {
            return match sessions.member(&place).await {
                Ok(member) => match answer(&*member, recognised, invocation).await.into() {
                    Output::One(report) => placed(*report, &place).into(),
                    Output::Sweep { reports } => Output::Sweep {
                        reports: reports
                            .into_iter()
                            .map(|report| placed(report, &place))
                            .collect(),
                    },
                },
                Err(err) => invocation
                    .timed(placed(unreachable(function, info, &err), &place))
                    .into(),
            };
        }
        let mut reports = Vec::new();
        for place in self.config.places(&self.hub_home) {
            // What does not fit before the deadline waits for the next schedule.
            if invocation.wait_deadline().passed() {
                let report = Report::new(
                    function,
                    info.clone(),
                    Outcome::NoAction,
                    "not reached before the deadline: left for the next schedule",
                );

                reports.push(placed(report, &place));
                continue;
            }
            let output = match sessions.member(&place).await {
                Ok(member) => answer(&*member, recognised.clone(), invocation)
                    .await
                    .into(),
                Err(err) => invocation
                    .timed(unreachable(function, info.clone(), &err))
                    .into(),
            };
            match output {
                Output::Sweep { reports: more } => {
                    reports.extend(more.into_iter().map(|report| placed(report, &place)))
                }
                Output::One(report) => reports.push(placed(*report, &place)),
            }
        }
        Output::Sweep { reports }
    }

    /// Where the plan a decision names was made: the account and region of its resource. A
    /// plan that does not exist is the hub's to answer for; one that cannot be read now is
    /// decided nowhere.
    async fn plan_origin(&self, event: &Value) -> Result<Origin, Rejection> {
        let plan_id = ["approve", "deny"]
            .iter()
            .find_map(|key| event.get(key).and_then(Value::as_str));
        let Some(plan_id) = plan_id else {
            return Ok(Origin::default());
        };
        let record = self.hub.safety().audit.plan(plan_id).await.map_err(|err| {
            Rejection(format!(
                "the plan {plan_id} could not be read, so nothing was decided; send the decision again: {err}"
            ))
        })?;
        let resource = record.and_then(|record| ResourceId::from_key(&record.plan.resource));
        Ok(resource.map_or_else(Origin::default, |resource| Origin {
            account: Some(resource.account),
            region: Some(resource.region),
        }))
    }
}

/// The `account` and `region` a manual payload names, taken out of it (its text and its
/// recognised payload both): the runbook reads the rest.
fn take_place(recognised: &mut Recognised) -> Origin {
    let mut take = |key: &str| {
        if let Ok(Trigger::Manual(payload)) = &mut recognised.trigger {
            payload.remove(key);
        }
        recognised
            .event
            .as_object_mut()
            .and_then(|payload| payload.remove(key))
            .map(|value| {
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string)
            })
    };
    Origin {
        account: take("account"),
        region: take("region"),
    }
}

/// The report of an event for a place whose role could not be assumed.
fn unreachable(function: &str, info: TriggerInfo, err: &SpokeError) -> Report {
    Report::new(function, info, Outcome::Failed, err.to_string())
}

/// A report of a hub that acts in several places says which: its `account` and `region`, and
/// its target `<name> (account <id> in <region>)`.
fn placed(mut report: Report, place: &Home) -> Report {
    report.target = Some(match report.target.take() {
        Some(target) => format!("{target} ({})", place.describe()),
        None => place.describe(),
    });
    report.account = Some(place.account.clone());
    report.region = Some(place.region.clone());
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_follow_the_event_within_sts_rules() {
        assert_eq!(session_name("1b2c-3d"), "runbook-1b2c-3d");
        let long = session_name(&format!("alarm:{}/x y", "a".repeat(100)));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("runbook-alarm-aaa"), "{long}");
    }
}
