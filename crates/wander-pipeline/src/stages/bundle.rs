//! `wander bundle`: the serving bundle, everything `wander serve` reads, in one folder.

use serde_json::json;
use serde_json::Value;
use wander_bundle::Catalogue;
use wander_bundle::ClusterEntry;
use wander_bundle::ItemEntry;
use wander_core::artifact::RunDir;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

/// `wander bundle`: the table, the catalogue (clusters, items, training engagements) and
/// the item model from ingest, taxonomy, train items and precompute.
pub fn bundle(ctx: &StageContext, force: bool) -> crate::Result<Summary> {
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = manifests(&run, StageId::Bundle.inputs())?;
    let outcome = run
        .run_stage(StageId::Bundle.folder(), json!({}), inputs, force, |w| -> crate::Result<Value> {
            let ds = wander_data::read_catalogue(open(&run, StageId::Ingest)?.reader())?;
            let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy)?.reader())?;
            let items = open(&run, StageId::TrainItems)?;
            let model = wander_items::model::SasRec::load(&items.path(ITEM_MODEL)?)?;
            let precompute = open(&run, StageId::Precompute)?;
            let assign = tax.planner_assign();
            if assign.len() != ds.items.len() {
                crate::bail!(
                    "the taxonomy assigns {} items, the catalogue has {}: artifacts of different runs",
                    assign.len(),
                    ds.items.len()
                );
            }
            let positives = crate::stages::items::train_positives(&run)?;
            let catalogue = Catalogue {
                format: wander_bundle::CATALOGUE_FORMAT,
                table_version: run.manifest_checksum(StageId::Precompute.folder())?,
                clusters: tax
                    .planner_clusters()
                    .iter()
                    .map(|c| ClusterEntry {
                        id: c.id,
                        description: c.description.clone(),
                        keywords: c.keywords.clone(),
                        size: c.size,
                    })
                    .collect(),
                items: ds
                    .items
                    .iter()
                    .zip(assign)
                    .zip(&positives)
                    .map(|((item, &cluster), &positives)| ItemEntry {
                        id: item.id.clone(),
                        title: item.title.clone(),
                        cluster,
                        positives,
                    })
                    .collect(),
                sasrec: model.cfg,
            };
            wander_bundle::write(
                w,
                &catalogue,
                &precompute.path(TABLE)?,
                &items.path(ITEM_MODEL)?,
            )?;
            crate::summaries::record(&crate::summaries::BundleSummary {
                clusters: catalogue.clusters.len(),
                items: catalogue.items.len(),
                table_version: catalogue.table_version.clone(),
            })
        })
        .context("bundle failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(StageId::Bundle, &outcome))
}
