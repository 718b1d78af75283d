//! Where the deployment runs (`Home`: its partition, region and account) and where it acts:
//! its own place, and for a hub the other accounts and regions it remediates (`FleetConfig`).

use super::refusal::Rejection;
use crate::config::{ConfigError, Env};

/// Where this deployment runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl Home {
    /// `AWS_REGION` (set by Lambda) and `ACCOUNT_ID` (set by template.yaml from
    /// `AWS::AccountId`); the partition follows from the region.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let region = env.required("AWS_REGION", "the function's region (Lambda sets it)")?;
        let account = env.required(
            "ACCOUNT_ID",
            "the 12-digit account the function runs in (template.yaml sets it from AWS::AccountId)",
        )?;
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::Invalid {
                var: "ACCOUNT_ID",
                value: account,
                expected: "a 12-digit AWS account id".into(),
            });
        }
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::Invalid {
                var: "AWS_REGION",
                value: region,
                expected: "a region such as us-east-1".into(),
            });
        }
        Ok(Self {
            partition: Self::partition_of(&region).to_string(),
            region,
            account,
        })
    }

    /// `aws`, or the partition an isolated region belongs to.
    pub fn partition_of(region: &str) -> &'static str {
        const PARTITIONS: [(&str, &str); 6] = [
            ("cn-", "aws-cn"),
            ("us-gov-", "aws-us-gov"),
            ("us-isob-", "aws-iso-b"),
            ("us-iso-", "aws-iso"),
            ("eu-isoe-", "aws-iso-e"),
            ("us-isof-", "aws-iso-f"),
        ];
        PARTITIONS
            .iter()
            .find(|(prefix, _)| region.starts_with(prefix))
            .map_or("aws", |(_, partition)| partition)
    }

    /// Another account and region of this partition.
    pub fn elsewhere(&self, account: &str, region: &str) -> Self {
        Self {
            partition: self.partition.clone(),
            region: region.to_string(),
            account: account.to_string(),
        }
    }

    /// `account 111111111111 in eu-west-1`, as reports name a place.
    pub fn describe(&self) -> String {
        format!("account {} in {}", self.account, self.region)
    }

    /// Refuses a partition, region or account that is not this function's own.
    pub fn require_home(
        &self,
        partition: &str,
        region: &str,
        account: &str,
        what: &str,
    ) -> Result<(), Rejection> {
        for (part, given, own) in [
            ("partition", partition, self.partition.as_str()),
            ("region", region, self.region.as_str()),
            ("account", account, self.account.as_str()),
        ] {
            if given != own {
                return Err(Rejection(format!(
                    "{what} is in {part} {given}, but this function acts only in its own {part} {own} (partition {}, region {}, account {}): nothing was done",
                    self.partition, self.region, self.account
                )));
            }
        }
        Ok(())
    }
}

/// Where the deployment may act besides its own account and region.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// ACCOUNTS: the spoke accounts (the hub's own account is implicit and not listed here).
    pub spokes: Vec<String>,
    /// REGIONS: the regions it acts in, the hub's own first.
    pub regions: Vec<String>,
    /// SPOKE_EXTERNAL_ID: what the hub passes when it assumes a spoke role.
    pub external_id: Option<String>,
}

impl FleetConfig {
    pub fn from_env(env: &Env, hub: &Home) -> Result<Self, ConfigError> {
        let mut spokes = Vec::new();
        for account in env.list("ACCOUNTS") {
            if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
                return Err(ConfigError::Invalid {
                    var: "ACCOUNTS",
                    value: account,
                    expected: "comma-separated 12-digit AWS account ids".into(),
                });
            }
            if account != hub.account && !spokes.contains(&account) {
                spokes.push(account);
            }
        }
        let mut regions = vec![hub.region.clone()];
        for region in env.list("REGIONS") {
            let valid = region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid || region.matches('-').count() < 2 {
                return Err(ConfigError::Invalid {
                    var: "REGIONS",
                    value: region,
                    expected: "comma-separated regions such as us-east-1,eu-west-1".into(),
                });
            }
            if Home::partition_of(&region) != hub.partition {
                return Err(ConfigError::Invalid {
                    var: "REGIONS",
                    value: region,
                    expected: format!("regions of the hub's partition {}", hub.partition),
                });
            }
            if !regions.contains(&region) {
                regions.push(region);
            }
        }
        let external_id = env.get("SPOKE_EXTERNAL_ID");
        if !spokes.is_empty() && external_id.as_ref().is_none_or(|id| id.len() < 16) {
            return Err(ConfigError::Invalid {
                var: "SPOKE_EXTERNAL_ID",
                value: external_id.unwrap_or_default(),
                expected: "the external id of the spoke roles (16 characters or more; spoke.yaml's ExternalId), required when ACCOUNTS lists accounts".into(),
            });
        }
        Ok(Self {
            spokes,
            regions,
            external_id,
        })
    }

    /// Whether the deployment acts anywhere besides its own account and region.
    pub fn is_fleet(&self) -> bool {
        !self.spokes.is_empty() || self.regions.len() > 1
    }

    /// Every account and region it acts in, the hub's own first.
    pub fn places(&self, hub: &Home) -> Vec<Home> {
        std::iter::once(&hub.account)
            .chain(&self.spokes)
            .flat_map(|account| {
                self.regions
                    .iter()
                    .map(move |region| hub.elsewhere(account, region))
            })
            .collect()
    }

    /// The place an event names (the hub's own when it names none), if the deployment acts
    /// there.
    pub fn admit(
        &self,
        hub: &Home,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<Home, Rejection> {
        let account = account.unwrap_or(&hub.account);
        let region = region.unwrap_or(&hub.region);
        if account != hub.account && !self.spokes.iter().any(|spoke| spoke == account) {
            return Err(Rejection(format!(
                "the event is from account {account}, which this deployment does not remediate: add it to ACCOUNTS (the template's SpokeAccounts) and deploy spoke.yaml there, or stop forwarding its events; nothing was done"
            )));
        }
        if !self.regions.iter().any(|known| known == region) {
            return Err(Rejection(format!(
                "the event is from region {region}, where this deployment does not act (REGIONS: {}): add it to the template's SpokeRegions, or stop forwarding its events; nothing was done",
                self.regions.join(", ")
            )));
        }
        Ok(hub.elsewhere(account, region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Home {
        Home::from_env(&Env::from_pairs(&[
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .expect("home")
    }

    #[test]
    fn accounts_and_regions_are_validated_and_the_hub_is_implicit() {
        let config = FleetConfig::from_env(
            &Env::from_pairs(&[
                ("ACCOUNTS", "111111111111, 123456789012,111111111111"),
                ("REGIONS", "eu-west-1,us-east-1"),
                ("SPOKE_EXTERNAL_ID", "external-id-of-16"),
            ]),
            &hub(),
        )
        .expect("valid");
        assert_eq!(config.spokes, vec!["111111111111"]);
        assert_eq!(config.regions, vec!["us-east-1", "eu-west-1"]);
        assert_eq!(config.places(&hub()).len(), 4);
        assert_eq!(config.places(&hub())[0], hub());

        for (var, value, named) in [
            ("ACCOUNTS", "12345", "ACCOUNTS"),
            ("REGIONS", "Europe", "REGIONS"),
            ("REGIONS", "cn-north-1", "REGIONS"),
        ] {
            let err = FleetConfig::from_env(
                &Env::from_pairs(&[(var, value), ("SPOKE_EXTERNAL_ID", "external-id-of-16")]),
                &hub(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(named), "{err}");
        }
        let err = FleetConfig::from_env(&Env::from_pairs(&[("ACCOUNTS", "111111111111")]), &hub())
            .unwrap_err();
        assert!(err.to_string().contains("SPOKE_EXTERNAL_ID"), "{err}");
        let single = FleetConfig::from_env(&Env::from_pairs(&[]), &hub()).expect("valid");
        assert!(!single.is_fleet());
    }

    #[test]
    fn only_listed_accounts_and_regions_are_admitted() {
        let config = FleetConfig::from_env(
            &Env::from_pairs(&[
                ("ACCOUNTS", "111111111111"),
                ("REGIONS", "eu-west-1"),
                ("SPOKE_EXTERNAL_ID", "external-id-of-16"),
            ]),
            &hub(),
        )
        .expect("valid");
        let hub = hub();
        assert_eq!(config.admit(&hub, None, None), Ok(hub.clone()));
        let spoke = config
            .admit(&hub, Some("111111111111"), Some("eu-west-1"))
            .expect("listed");
        assert_eq!(
            (spoke.account.as_str(), spoke.region.as_str()),
            ("111111111111", "eu-west-1")
        );
        let other = config.admit(&hub, Some("222222222222"), None).unwrap_err();
        assert!(other.0.contains("account 222222222222"), "{other}");
        assert!(other.0.contains("ACCOUNTS"), "{other}");
        let region = config
            .admit(&hub, Some("111111111111"), Some("ap-south-1"))
            .unwrap_err();
        assert!(region.0.contains("region ap-south-1"), "{region}");
    }

    #[test]
    fn home_needs_a_region_and_an_account() {
        let err = Home::from_env(&Env::from_pairs(&[("AWS_REGION", "us-east-1")])).unwrap_err();
        assert!(err.to_string().contains("ACCOUNT_ID"));
        let err = Home::from_env(&Env::from_pairs(&[
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "12345"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("12-digit"));
        let cn = Home::from_env(&Env::from_pairs(&[
            ("AWS_REGION", "cn-north-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        assert_eq!(cn.partition, "aws-cn");
        assert_eq!(Home::partition_of("us-isob-east-1"), "aws-iso-b");
        assert_eq!(Home::partition_of("us-iso-east-1"), "aws-iso");
        assert_eq!(Home::partition_of("eu-west-1"), "aws");
    }
}
