//! The counts the database keeps as rows change (`run_tallies`, kept by
//! triggers: see the migration `tallies`), read instead of grouping every
//! component. A run's components
//! are work items of its label and stage, so a run's tallies joined with
//! the run give every per-label and per-stage count of components.
//!
//! `SUM` of a BIGINT is a NUMERIC on PostgreSQL and a DECIMAL on MySQL:
//! each backend casts it back with its own word for a 64-bit integer.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::db::drivers::{MysqlConnection, PgConnection, SqliteConnection};
use crate::db::models::{ReportGroup, StageCount};
use crate::db::schema::*;
use crate::state::ComponentState;

/// Components of a label and stage in a state and active or not, with
/// their summed runtime.
#[derive(Debug, Clone, Queryable)]
pub struct TallyGroup {
    pub label: String,
    pub stage: String,
    pub state: ComponentState,
    pub active: bool,
    pub components: i64,
    pub runtime: f64,
}

pub trait TallyStore {
    /// Components per label, stage, state and active flag (of runs of
    /// `label` and `stage` when given), with their summed runtime.
    fn tally_groups(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<TallyGroup>>;
    /// Each run's summed component runtime (of runs of `label` and
    /// `stage` when given).
    fn tally_runtimes(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<(i64, f64)>>;
    /// What [`Self::tally_groups`] must equal, counted from every
    /// component (slow: for checks).
    fn recount(&mut self) -> QueryResult<Vec<TallyGroup>>;

    /// Components per label, stage and state with their summed runtime,
    /// by label, stage and state.
    fn report_groups_tallied(
        &mut self,
        label: Option<&str>,
        stage: Option<&str>,
    ) -> QueryResult<Vec<ReportGroup>> {
        let mut out: Vec<ReportGroup> = Vec::new();
        for g in self.tally_groups(label, stage)? {
            match out.last_mut() {
                Some(r) if r.label == g.label && r.stage == g.stage && r.state == g.state => {
                    r.components += g.components;
                    *r.runtime_s.get_or_insert(0.0) += g.runtime;
                }
                _ => out.push(ReportGroup {
                    label: g.label,
                    stage: g.stage,
                    state: g.state,
                    components: g.components,
                    runtime_s: Some(g.runtime),
                }),
            }
        }
        out.retain(|r| r.components != 0);
        Ok(out)
    }

    /// Components of active runs (their work items) per label and stage.
    fn active_groups_tallied(&mut self) -> QueryResult<Vec<StageCount>> {
        let mut out: Vec<StageCount> = Vec::new();
        for g in self
            .tally_groups(None, None)?
            .into_iter()
            .filter(|g| g.active)
        {
            match out.last_mut() {
                Some(r) if r.label == g.label && r.stage == g.stage => r.items += g.components,
                _ => out.push(StageCount {
                    label: g.label,
                    stage: g.stage,
                    items: g.components,
                }),
            }
        }
        out.retain(|r| r.items != 0);
        Ok(out)
    }
}

macro_rules! impl_tally_store {
    ($conn:ty, $bigint:literal) => {
        impl TallyStore for $conn {
            fn tally_groups(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<TallyGroup>> {
                let mut q = run_tallies::table
                    .inner_join(remote_runs::table)
                    .group_by((
                        remote_runs::label,
                        remote_runs::stage,
                        run_tallies::state,
                        run_tallies::active,
                    ))
                    .select((
                        remote_runs::label,
                        remote_runs::stage,
                        run_tallies::state,
                        run_tallies::active,
                        sql::<BigInt>(concat!(
                            "CAST(SUM(run_tallies.components) AS ",
                            $bigint,
                            ")"
                        )),
                        sql::<diesel::sql_types::Double>("SUM(run_tallies.runtime)"),
                    ))
                    .order((
                        remote_runs::label,
                        remote_runs::stage,
                        run_tallies::state,
                        run_tallies::active,
                    ))
                    .into_boxed();
                if let Some(l) = label {
                    q = q.filter(remote_runs::label.eq(l.to_string()));
                }
                if let Some(s) = stage {
                    q = q.filter(remote_runs::stage.eq(s.to_string()));
                }
                q.load(self)
            }

            fn tally_runtimes(
                &mut self,
                label: Option<&str>,
                stage: Option<&str>,
            ) -> QueryResult<Vec<(i64, f64)>> {
                let mut q = run_tallies::table
                    .inner_join(remote_runs::table)
                    .group_by(run_tallies::remote_id)
                    .select((
                        run_tallies::remote_id,
                        sql::<diesel::sql_types::Double>("SUM(run_tallies.runtime)"),
                    ))
                    .into_boxed();
                if let Some(l) = label {
                    q = q.filter(remote_runs::label.eq(l.to_string()));
                }
                if let Some(s) = stage {
                    q = q.filter(remote_runs::stage.eq(s.to_string()));
                }
                q.load(self)
            }

            fn recount(&mut self) -> QueryResult<Vec<TallyGroup>> {
                let runs: Vec<(String, String, ComponentState, bool, i64, Option<f64>)> =
                    remote_components::table
                        .inner_join(remote_runs::table)
                        .group_by((
                            remote_runs::label,
                            remote_runs::stage,
                            remote_components::state,
                            remote_components::active,
                        ))
                        .select((
                            remote_runs::label,
                            remote_runs::stage,
                            remote_components::state,
                            remote_components::active,
                            diesel::dsl::count_star(),
                            diesel::dsl::sum(remote_components::runtime),
                        ))
                        .order((
                            remote_runs::label,
                            remote_runs::stage,
                            remote_components::state,
                            remote_components::active,
                        ))
                        .load(self)?;
                Ok(runs
                    .into_iter()
                    .map(
                        |(label, stage, state, active, components, runtime)| TallyGroup {
                            label,
                            stage,
                            state,
                            active,
                            components,
                            runtime: runtime.unwrap_or(0.0),
                        },
                    )
                    .collect())
            }
        }
    };
}

impl_tally_store!(SqliteConnection, "BIGINT");
impl_tally_store!(PgConnection, "BIGINT");
impl_tally_store!(MysqlConnection, "SIGNED");
