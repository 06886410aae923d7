"""Asset checks on the label table: ages in range, vectors sum to 1, unique ids,
counts match the crops.  The logic lives in ``agedistill_core.teacher.vmage.check_vmage``."""
import dagster as dg

from agedistill_core.shards import read_table
from agedistill_core.labeltable import manifest_crops
from agedistill_core.teacher.vmage import check_vmage
from agedistill_dag.profile import Profile
from agedistill_dag.resources import AgedistillConfig

CHECK_NAMES = ["ages_in_range", "vectors_sum_to_one", "unique_ids", "counts_match_crops"]


def vmage_checks(p: Profile) -> dg.AssetChecksDefinition:
    table_key = p.key("vmage_table")

    @dg.multi_asset_check(specs=[dg.AssetCheckSpec(name, asset=table_key) for name in CHECK_NAMES])
    def vmage_checks(context: dg.AssetCheckExecutionContext, config: AgedistillConfig):
        settings = p.run_settings(config, context, "vmage")
        table = read_table(settings.vmage_path)
        crops = manifest_crops(settings, ["image_id", "status"])
        for result in check_vmage(table, crops):
            yield dg.AssetCheckResult(check_name=result.name, asset_key=table_key, passed=result.passed,
                                      metadata={"detail": result.detail, "value": float(result.value)})  # plotted

    return vmage_checks
