"""Drop two single-column foreign key indexes that other indexes already cover.

- runs_run.team_id: seven of runs_run's indexes start with team_id (run_team_recent first).
- runs_runevent.run_id: the (run_id, sequence) unique constraint's index starts with it.

Each was one more index to write per run and per frame. Only the indexes go: Django's own
AlterField would rebuild both tables on SQLite (copying every frame) and drop and re-check
both foreign keys on PostgreSQL, for the same result.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = [
    ("runs_run_team_id_a3dc55d3", "runs_run", "team_id"),
    ("runs_runevent_run_id_8bd13aa7", "runs_runevent", "run_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_reports_thread_usage_times"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}")',
                )
                for name, table, column in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="run",
                    name="team",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="runs.team",
                    ),
                ),
                migrations.AlterField(
                    model_name="runevent",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="runs.run",
                    ),
                ),
            ],
        ),
    ]
