import django.utils.timezone
from django.db import migrations, models


def forget_thread_usage(apps, schema_editor):
    # Per-thread totals change shape; with no sync record they are rebuilt from the runs on the
    # next read (or by `manage.py rebuild_usage`), so dropping them loses nothing.
    apps.get_model("runs", "ThreadUsage").objects.all().delete()
    apps.get_model("runs", "ThreadUsageSync").objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0004_reports_thread_usage_compact_histograms'),
    ]

    operations = [
        migrations.RunPython(forget_thread_usage, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name='threadusage',
            name='thread_usage_costliest',
        ),
        migrations.RemoveField(
            model_name='threadusage',
            name='first_day',
        ),
        migrations.RemoveField(
            model_name='threadusage',
            name='last_day',
        ),
        migrations.AddField(
            model_name='threadusage',
            name='first_started_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='threadusage',
            name='last_started_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
            preserve_default=False,
        ),
        migrations.AddIndex(
            model_name='threadusage',
            index=models.Index(fields=['team', '-cost', '-last_started_at', '-thread', 'first_started_at'], name='thread_usage_by_cost'),
        ),
    ]
