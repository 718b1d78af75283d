//! Whether a resource belongs to a CloudFormation stack: a change made while that stack is
//! being deployed would fight the deploy, and a change to a stack's resource is drift that the
//! stack's next deploy reverts unless its template is updated.

use serde::{Deserialize, Serialize};

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
