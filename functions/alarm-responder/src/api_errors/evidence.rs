//! The evidence `api-errors` reads for each suspect: its function's and the tables it names.

use chrono::Utc;
use runbook_shared::model::{Evidence, Subject};

use super::{MAX_SUSPECTS, Suspect, TABLES_UNREAD};
use crate::Responder;

impl Responder {
    /// A suspect's evidence, and that of the tables its configuration names.
    pub(super) async fn suspect_evidence(
        &self,
        suspect: &Suspect,
        window: (chrono::DateTime<Utc>, chrono::DateTime<Utc>),
    ) -> (Evidence, Vec<(String, Evidence)>) {
        let Some(sources) = runbook_shared::path::Function::evidence_sources(self) else {
            return (Evidence::default(), Vec::new());
        };
        let config = &self.config.safety.evidence;
        let subject = Subject::Function {
            name: suspect.function.clone(),
            qualifier: suspect.qualifier.clone(),
        };
        let (evidence, tables) = tokio::join!(
            Box::pin(runbook_shared::path::evidence::gather(
                sources, &subject, window, config
            )),
            self.tables_of(suspect)
        );
        let tables = match tables {
            Ok(tables) => tables,
            Err(err) => {
                let mut evidence = evidence;
                evidence.errors.push(format!("{TABLES_UNREAD}{err}"));
                return (evidence, Vec::new());
            }
        };
        let reads = tables.iter().map(|table| {
            let subject = Subject::Table {
                table: table.clone(),
                index: None,
            };
            async move {
                let evidence = Box::pin(runbook_shared::path::evidence::gather(
                    sources, &subject, window, config,
                ))
                .await;
                (subject, evidence)
            }
        });
        let tables = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .filter_map(|(subject, evidence)| match subject {
                Subject::Table { table, .. } => Some((table, evidence)),
                _ => None,
            })
            .collect();
        (evidence, tables)
    }

    /// The DynamoDB tables a function's configuration names: the values of its environment
    /// variables whose name says `TABLE` (`ORDERS_TABLE`, `TABLE_NAME`), by name or ARN, in
    /// this account and region.
    pub(super) async fn tables_of(&self, suspect: &Suspect) -> Result<Vec<String>, String> {
        let configuration = self
            .clients
            .lambda
            .get_function_configuration()
            .function_name(&suspect.function)
            .set_qualifier(suspect.qualifier.clone())
            .send()
            .await
            .map_err(|err| {
                runbook_shared::aws::AwsError::from_sdk(
                    "lambda:GetFunctionConfiguration",
                    &format!("function {}", suspect.name()),
                    &err,
                )
                .to_string()
            })?;
        let home = &self.config.safety.home;
        let mut tables: Vec<String> = configuration
            .environment()
            .and_then(|environment| environment.variables())
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.to_ascii_uppercase().contains("TABLE"))
            .filter_map(|(_, value)| match home.parse_table(value).ok()?.resource {
                runbook_shared::model::Resource::Table { table } => Some(table),
                _ => None,
            })
            .collect();
        tables.sort();
        tables.dedup();
        tables.truncate(MAX_SUSPECTS);
        Ok(tables)
    }
}
