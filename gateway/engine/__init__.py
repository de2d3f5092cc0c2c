"""The execution engine: graphql-core's algorithm, run from plans cached per document."""

from gateway.engine.executor import PlannedExecutionContext, planned_execution_context

__all__ = ["PlannedExecutionContext", "planned_execution_context"]
