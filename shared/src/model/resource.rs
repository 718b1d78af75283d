//! One identity per resource: the name a person reads, and the canonical key (partition,
//! region, account and resource, in ARN form) behind every lease, cooldown, history and raise
//! record. ARNs are parsed here and nowhere else, and an ARN outside the function's own
//! partition, region and account is refused: acting on a same-named resource elsewhere would
//! be acting on the wrong one.

use super::arn::{Arn, split_qualifier, valid_name, wrong_kind};
use super::place::Home;
use super::refusal::Rejection;

/// A resource's identity in this deployment's place (or another it acts in), named or parsed.
impl Home {
    fn id(&self, resource: Resource) -> ResourceId {
        ResourceId {
            partition: self.partition.clone(),
            region: self.region.clone(),
            account: self.account.clone(),
            resource,
        }
    }

    pub fn table(&self, table: &str) -> ResourceId {
        self.id(Resource::Table {
            table: table.into(),
        })
    }

    pub fn index(&self, table: &str, index: &str) -> ResourceId {
        self.id(Resource::Index {
            table: table.into(),
            index: index.into(),
        })
    }

    pub fn function(&self, function: &str) -> ResourceId {
        self.id(Resource::Function {
            function: function.into(),
        })
    }

    pub fn alias(&self, function: &str, alias: &str) -> ResourceId {
        self.id(Resource::Alias {
            function: function.into(),
            alias: alias.into(),
        })
    }

    pub fn api(&self, api: &str, stage: Option<&str>) -> ResourceId {
        self.id(Resource::Api {
            api: api.into(),
            stage: stage.map(str::to_string),
        })
    }

    pub fn stack(&self, stack: &str) -> ResourceId {
        self.id(Resource::Stack {
            stack: stack.into(),
        })
    }

    pub fn queue(&self, queue: &str) -> ResourceId {
        self.id(Resource::Queue {
            queue: queue.into(),
        })
    }

    pub fn stored_limit(&self, table: &str, key: &str, attribute: &str) -> ResourceId {
        self.id(Resource::StoredLimit {
            table: table.into(),
            key: key.into(),
            attribute: attribute.into(),
        })
    }

    /// The account-wide resource behind every function's reserved concurrency: raises are
    /// serialised on it so that the unreserved floor holds under concurrency.
    pub fn account_concurrency(&self) -> ResourceId {
        self.id(Resource::AccountConcurrency)
    }

    /// A DynamoDB table given by name or ARN (an index ARN names its index too).
    pub fn parse_table(&self, text: &str) -> Result<ResourceId, Rejection> {
        let text = text.trim();
        if !text.starts_with("arn:") {
            return Ok(self.table(&valid_name(text, "a DynamoDB table")?));
        }
        let arn = self.parse_arn(text, "dynamodb")?;
        let rest = arn
            .resource
            .strip_prefix("table/")
            .ok_or_else(|| wrong_kind(text, "a DynamoDB table ARN (…:table/<name>)"))?;
        match rest.split_once("/index/") {
            Some((table, index)) => Ok(self.index(
                &valid_name(table, "a DynamoDB table")?,
                &valid_name(index, "a global secondary index")?,
            )),
            None if !rest.contains('/') => Ok(self.table(&valid_name(rest, "a DynamoDB table")?)),
            None => Err(wrong_kind(text, "a DynamoDB table ARN (…:table/<name>)")),
        }
    }

    /// A Lambda function given by name, `name:qualifier` or ARN (qualified or not).
    pub fn parse_function(&self, text: &str) -> Result<ResourceId, Rejection> {
        let text = text.trim();
        let (function, qualifier) = if text.starts_with("arn:") {
            let arn = self.parse_arn(text, "lambda")?;
            let rest = arn
                .resource
                .strip_prefix("function:")
                .ok_or_else(|| wrong_kind(text, "a Lambda function ARN (…:function:<name>)"))?
                .to_string();
            split_qualifier(&rest)
        } else {
            split_qualifier(text)
        };
        let function = valid_name(&function, "a Lambda function")?;
        match qualifier {
            None => Ok(self.function(&function)),
            Some(qualifier) => Ok(self.alias(
                &function,
                &valid_name(&qualifier, "a function alias or version")?,
            )),
        }
    }

    /// A CloudFormation stack given by name or stack id (ARN).
    pub fn parse_stack(&self, text: &str) -> Result<ResourceId, Rejection> {
        let text = text.trim();
        if !text.starts_with("arn:") {
            return Ok(self.stack(&valid_name(text, "a CloudFormation stack")?));
        }
        let arn = self.parse_arn(text, "cloudformation")?;
        let name = arn
            .resource
            .strip_prefix("stack/")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| wrong_kind(text, "a stack id (…:stack/<name>/<id>)"))?;
        Ok(self.stack(&valid_name(name, "a CloudFormation stack")?))
    }

    /// An ARN of `service` in this partition, region and account.
    pub fn parse_arn(&self, text: &str, service: &str) -> Result<Arn, Rejection> {
        let arn = Arn::parse(text)?;
        if arn.service != service {
            return Err(Rejection(format!(
                "{text:?} is an ARN of {}, not of {service}",
                arn.service
            )));
        }
        self.require_home(&arn.partition, &arn.region, &arn.account, text)?;
        Ok(arn)
    }
}

/// What the resource is, inside its account and region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Table {
        table: String,
    },
    Index {
        table: String,
        index: String,
    },
    Function {
        function: String,
    },
    /// A qualified function: an alias or a version.
    Alias {
        function: String,
        alias: String,
    },
    Stack {
        stack: String,
    },
    Queue {
        queue: String,
    },
    /// A number in an item of an application's limits table.
    StoredLimit {
        table: String,
        key: String,
        attribute: String,
    },
    /// The account's unreserved Lambda concurrency.
    AccountConcurrency,
    /// An API Gateway API (REST or HTTP, by the name or id its alarm or payload gives), or one
    /// stage of it: what an `api-errors` triage is keyed by.
    Api {
        api: String,
        stage: Option<String>,
    },
}

/// A resource in one partition, region and account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceId {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub resource: Resource,
}

const ITEM: &str = "/item/";
const API_PREFIX: &str = "/apis/";
const STAGE: &str = "/stages/";
const ATTRIBUTE: &str = "/attribute/";

impl ResourceId {
    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// The canonical key: the resource's ARN (for a stack without its id; for a stored limit,
    /// the table's ARN with the item and attribute). Audit records, cooldowns and raise records
    /// are keyed by it, so every spelling of one resource meets the same history.
    pub fn key(&self) -> String {
        match &self.resource {
            Resource::Table { table } => self.arn("dynamodb", &format!("table/{table}")),
            Resource::Index { table, index } => {
                self.arn("dynamodb", &format!("table/{table}/index/{index}"))
            }
            Resource::Function { function } => self.arn("lambda", &format!("function:{function}")),
            Resource::Alias { function, alias } => {
                self.arn("lambda", &format!("function:{function}:{alias}"))
            }
            Resource::Stack { stack } => self.arn("cloudformation", &format!("stack/{stack}")),
            Resource::Queue { queue } => self.arn("sqs", queue),
            Resource::StoredLimit {
                table,
                key,
                attribute,
            } => self.arn(
                "dynamodb",
                &format!("table/{table}{ITEM}{key}{ATTRIBUTE}{attribute}"),
            ),
            Resource::AccountConcurrency => self.arn("lambda", "account-concurrency"),
            // With the account, unlike API Gateway's own ARNs: two accounts' APIs of one name
            // are two histories.
            Resource::Api { api, stage } => self.arn(
                "apigateway",
                &match stage {
                    Some(stage) => format!("{API_PREFIX}{api}{STAGE}{stage}"),
                    None => format!("{API_PREFIX}{api}"),
                },
            ),
        }
    }

    /// The key of the lease taken to change it: one lease per resource, whatever the runbook
    /// or step. An index is changed through its table's UpdateTable, an alias and a function's
    /// settings through the function.
    pub fn lease_key(&self) -> String {
        let owner = match &self.resource {
            Resource::Index { table, .. } => Resource::Table {
                table: table.clone(),
            },
            Resource::Alias { function, .. } => Resource::Function {
                function: function.clone(),
            },
            other => other.clone(),
        };
        ResourceId {
            resource: owner,
            ..self.clone()
        }
        .key()
    }

    /// The id CloudFormation knows the resource by, for the resources a stack's template sets
    /// the changed properties of (a table's or index's capacity: the table; a function's or an
    /// alias's settings: the function).
    pub fn physical_id(&self) -> Option<String> {
        match &self.resource {
            Resource::Table { table } | Resource::Index { table, .. } => Some(table.clone()),
            Resource::Function { function } | Resource::Alias { function, .. } => {
                Some(function.clone())
            }
            _ => None,
        }
    }

    /// The kind and the name a pattern of `MANAGED_RESOURCES` is matched against (an index and
    /// a stored limit by their table, an alias by its function); none for what no pattern names.
    pub fn managed_as(&self) -> Option<(&'static str, &str)> {
        match &self.resource {
            Resource::Table { table }
            | Resource::Index { table, .. }
            | Resource::StoredLimit { table, .. } => Some(("table", table)),
            Resource::Function { function } | Resource::Alias { function, .. } => {
                Some(("function", function))
            }
            Resource::Stack { stack } => Some(("stack", stack)),
            Resource::Queue { queue } => Some(("queue", queue)),
            Resource::AccountConcurrency | Resource::Api { .. } => None,
        }
    }

    /// The name a person reads in the report: `orders`, `orders/index/by-customer`,
    /// `orders-api:live`, `limits/tenant#42/requests_per_second`.
    pub fn name(&self) -> String {
        match &self.resource {
            Resource::Table { table } => table.clone(),
            Resource::Index { table, index } => format!("{table}/index/{index}"),
            Resource::Function { function } => function.clone(),
            Resource::Alias { function, alias } => format!("{function}:{alias}"),
            Resource::Stack { stack } => stack.clone(),
            Resource::Queue { queue } => queue.clone(),
            Resource::StoredLimit {
                table,
                key,
                attribute,
            } => format!("{table}/{key}/{attribute}"),
            Resource::AccountConcurrency => "the account's Lambda concurrency".into(),
            Resource::Api { api, stage } => match stage {
                Some(stage) => format!("{api} stage {stage}"),
                None => api.clone(),
            },
        }
    }

    /// The inverse of `key`, for records read back from the audit table.
    pub fn from_key(key: &str) -> Option<Self> {
        let arn = Arn::parse(key).ok()?;
        let resource = match arn.service.as_str() {
            "dynamodb" => {
                let rest = arn.resource.strip_prefix("table/")?;
                if let Some((table, item)) = rest.split_once(ITEM) {
                    let (key, attribute) = item.rsplit_once(ATTRIBUTE)?;
                    Resource::StoredLimit {
                        table: table.into(),
                        key: key.into(),
                        attribute: attribute.into(),
                    }
                } else if let Some((table, index)) = rest.split_once("/index/") {
                    Resource::Index {
                        table: table.into(),
                        index: index.into(),
                    }
                } else {
                    Resource::Table { table: rest.into() }
                }
            }
            "lambda" if arn.resource == "account-concurrency" => Resource::AccountConcurrency,
            "lambda" => {
                let rest = arn.resource.strip_prefix("function:")?;
                match split_qualifier(rest) {
                    (function, None) => Resource::Function { function },
                    (function, Some(alias)) => Resource::Alias { function, alias },
                }
            }
            "cloudformation" => Resource::Stack {
                stack: arn.resource.strip_prefix("stack/")?.into(),
            },
            "sqs" => Resource::Queue {
                queue: arn.resource.clone(),
            },
            "apigateway" => {
                let rest = arn.resource.strip_prefix(API_PREFIX)?;
                match rest.split_once(STAGE) {
                    Some((api, stage)) => Resource::Api {
                        api: api.into(),
                        stage: Some(stage.into()),
                    },
                    None => Resource::Api {
                        api: rest.into(),
                        stage: None,
                    },
                }
            }
            _ => return None,
        };
        Some(Self {
            partition: arn.partition,
            region: arn.region,
            account: arn.account,
            resource,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn home() -> Home {
        Home::from_env(&Env::from_pairs(&[
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap()
    }

    #[test]
    fn a_name_and_its_arn_are_one_resource() {
        let home = home();
        let by_name = home.parse_table("orders").unwrap();
        let by_arn = home
            .parse_table("arn:aws:dynamodb:us-east-1:123456789012:table/orders")
            .unwrap();
        assert_eq!(by_name, by_arn);
        assert_eq!(
            by_name.key(),
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
        );
        assert_eq!(by_name.name(), "orders");
        let function = home.parse_function("orders-api").unwrap();
        assert_eq!(
            function,
            home.parse_function("arn:aws:lambda:us-east-1:123456789012:function:orders-api")
                .unwrap()
        );
        let stack = home
            .parse_stack("arn:aws:cloudformation:us-east-1:123456789012:stack/orders/4c2a1d70-8a0b")
            .unwrap();
        assert_eq!(stack, home.parse_stack("orders").unwrap());
    }

    #[test]
    fn leases_are_taken_on_the_resource_that_changes() {
        let home = home();
        let index = home
            .parse_table("arn:aws:dynamodb:us-east-1:123456789012:table/orders/index/by-day")
            .unwrap();
        assert_eq!(index.name(), "orders/index/by-day");
        assert_eq!(index.lease_key(), home.table("orders").key());
        let alias = home.parse_function("orders-api:live").unwrap();
        assert_eq!(alias.name(), "orders-api:live");
        assert_eq!(alias.lease_key(), home.function("orders-api").key());
        assert_eq!(
            home.parse_function("arn:aws:lambda:us-east-1:123456789012:function:orders-api:live")
                .unwrap(),
            alias
        );
    }

    #[test]
    fn keys_read_back_into_the_same_identity() {
        let home = home();
        for id in [
            home.table("orders"),
            home.index("orders", "by-day"),
            home.function("f"),
            home.alias("f", "live"),
            home.stack("s"),
            home.queue("q.fifo"),
            home.stored_limit("limits", "tenant#42/eu", "requests_per_second"),
            home.account_concurrency(),
            home.api("orders api", Some("prod")),
            home.api("a1b2c3d4e5", None),
        ] {
            assert_eq!(
                ResourceId::from_key(&id.key()),
                Some(id.clone()),
                "{}",
                id.key()
            );
        }
    }

    #[test]
    fn foreign_arns_are_refused_naming_both_sides() {
        let home = home();
        let err = home
            .parse_table("arn:aws:dynamodb:eu-west-1:123456789012:table/orders")
            .unwrap_err();
        assert!(err.0.contains("region eu-west-1"), "{err}");
        assert!(err.0.contains("own region us-east-1"), "{err}");
        let err = home
            .parse_function("arn:aws:lambda:us-east-1:999999999999:function:f")
            .unwrap_err();
        assert!(err.0.contains("account 999999999999"), "{err}");
        let err = home
            .parse_stack("arn:aws-cn:cloudformation:us-east-1:123456789012:stack/s/1")
            .unwrap_err();
        assert!(err.0.contains("partition aws-cn"), "{err}");
        assert!(
            home.parse_table("arn:aws:sqs:us-east-1:123456789012:q")
                .is_err()
        );
        assert!(home.parse_table("").is_err());
        assert!(home.parse_table("not a table").is_err());
    }
}
