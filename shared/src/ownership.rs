//! Whether a resource belongs to a CloudFormation stack: a change made while that stack is
//! being deployed would fight the deploy, and a change to a stack's resource is drift that the
//! stack's next deploy reverts unless its template is updated.

use serde::{Deserialize, Serialize};

use crate::aws::{AwsError, FaultKind};

/// The stack a resource belongs to, and the resource's place in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub stack: String,
    pub stack_status: String,
    pub logical_id: String,
    pub resource_type: String,
}

impl Owner {
    /// A deploy, an update or a rollback of the stack is under way.
    pub fn deploying(&self) -> bool {
        self.stack_status.ends_with("_IN_PROGRESS")
    }
}

/// What a change to a stack's resource leaves behind, for the report and its event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackDrift {
    pub stack: String,
    pub logical_id: String,
    pub resource_type: String,
    /// The template properties the change set outside the template.
    pub properties: Vec<String>,
    pub note: String,
}

impl StackDrift {
    pub fn new(owner: Owner, properties: &[&str]) -> Self {
        let note = format!(
            "{} ({}) of stack {} was changed outside its template: the next deploy of {} sets {} back to the template's value unless the template is updated with the new value (docs/brakes.md, \"Hand the drift back\")",
            owner.logical_id,
            owner.resource_type,
            owner.stack,
            owner.stack,
            properties.join(" and ")
        );
        Self {
            stack: owner.stack,
            logical_id: owner.logical_id,
            resource_type: owner.resource_type,
            properties: properties.iter().map(|p| (*p).to_string()).collect(),
            note,
        }
    }
}

/// The stack whose resource has `physical_id`, with the stack's status; `None` when no stack
/// has it (CloudFormation answers ValidationError "Stack for … does not exist").
pub async fn owner_of(
    cloudformation: &aws_sdk_cloudformation::Client,
    physical_id: &str,
) -> Result<Option<Owner>, AwsError> {
    let resources = match cloudformation
        .describe_stack_resources()
        .physical_resource_id(physical_id)
        .send()
        .await
    {
        Ok(resources) => resources,
        Err(err) => {
            let err =
                AwsError::from_sdk("cloudformation:DescribeStackResources", physical_id, &err);
            if err.is(FaultKind::NotFound) || err.code.as_deref() == Some("ValidationError") {
                return Ok(None);
            }
            return Err(err);
        }
    };
    // The answer lists the resources of the one stack that has it (at most 100 of them): the
    // stack is known from any row, the resource's own row may be past the first 100.
    let rows = resources.stack_resources();
    let Some(stack) = rows
        .first()
        .and_then(|row| row.stack_name())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let resource = rows
        .iter()
        .find(|row| row.physical_resource_id() == Some(physical_id));
    let unknown = || "(not among the stack's first 100 resources)".to_string();
    let described = cloudformation
        .describe_stacks()
        .stack_name(&stack)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk(
                "cloudformation:DescribeStacks",
                &format!("stack {stack}"),
                &err,
            )
        })?;
    let stack_status = described
        .stacks()
        .first()
        .and_then(|s| s.stack_status())
        .map(|status| status.as_str().to_string())
        .unwrap_or_default();
    Ok(Some(Owner {
        stack,
        stack_status,
        logical_id: resource
            .and_then(|row| row.logical_resource_id())
            .map_or_else(unknown, str::to_string),
        resource_type: resource
            .and_then(|row| row.resource_type())
            .map_or_else(unknown, str::to_string),
    }))
}
