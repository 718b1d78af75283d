//! Whether a resource belongs to a CloudFormation stack: a change made while that stack is
//! being deployed would fight the deploy, and a change to a stack's resource is drift that the
//! stack's next deploy reverts unless its template is updated.

use crate::aws::{AwsError, FaultKind};
use crate::model::Owner;

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
