"""Operations: systemd lifecycle and the idle watcher, metrics, host facts, migrations, backup and
restore."""
