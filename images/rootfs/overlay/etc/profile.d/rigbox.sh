# Workspace environment variables (written by the guest agent) in every login shell.
if [ -r /etc/rigbox/env ]; then
    set -a
    . /etc/rigbox/env
    set +a
fi
