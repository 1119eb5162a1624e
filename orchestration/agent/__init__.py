"""The agent of a GPU host: the same image and code as GPU Config, started as
``manage.py run_agent`` on a host other than GPU Config's own.

It joins once (join token -> credential, kept in its state folder), reports the host's GPUs
and labelled services over HTTPS, then runs a Celery worker that consumes only its host's
queue (``host.<name>``) under the node name ``agent@<name>``. GPU Config reaches it through
Celery alone: tasks on that queue, and remote control (ping) for liveness. Nothing connects
to the agent, and the agent never touches GPU Config's database.
"""
