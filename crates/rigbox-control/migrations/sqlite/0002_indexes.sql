-- Placement, start admission and GET /capacity count the live workspaces of a node.
CREATE INDEX workspaces_node_status ON workspaces(node_id, status);

-- Keyset pagination walks (user_id, created_at, id) in order without sorting.
DROP INDEX workspaces_user;
CREATE INDEX workspaces_user_page ON workspaces(user_id, created_at, id);
DROP INDEX api_keys_user;
CREATE INDEX api_keys_user_page ON api_keys(user_id, created_at, id);
CREATE INDEX ssh_keys_user_page ON ssh_keys(user_id, created_at, id);
