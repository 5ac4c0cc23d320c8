-- Placement, start admission and GET /capacity count the live workspaces of a node.
CREATE INDEX workspaces_node_status ON workspaces(node_id, status);
