// Resolved negotiations, linked to the agents that took part and the tasks they concern.
// Numbered after the PostgreSQL migration that brought them, so parallel work cannot collide.
CREATE CONSTRAINT negotiation_id IF NOT EXISTS FOR (n:Negotiation) REQUIRE n.id IS UNIQUE;
