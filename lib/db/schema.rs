//! Table definitions shared by both backends (see `migrations/sqlite` and
//! `migrations/postgres`, which must describe the same columns).

diesel::table! {
    work_items (id) {
        id -> BigInt,
        stage -> Text,
        stage_id -> BigInt,
        label -> Text,
        priority -> Integer,
        params -> Text,
        state -> Text,
        attempts -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    remote_runs (remote_id) {
        remote_id -> BigInt,
        state -> Text,
        stage -> Text,
        label -> Text,
        path_base -> Text,
        target -> Nullable<Text>,
        job_id -> Nullable<Text>,
        last_poll -> Nullable<Timestamp>,
        fault -> Integer,
        message -> Nullable<Text>,
        job_policy -> Text,
        attempt -> Integer,
        auth_return_state -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        state_since -> Timestamp,
        held_until -> Nullable<Timestamp>,
        fault_count -> Integer,
        poll_failures -> Integer,
        poll_failed_since -> Nullable<Timestamp>,
        poll_error -> Nullable<Text>,
        apply_pending -> Bool,
    }
}

diesel::table! {
    remote_components (id) {
        id -> BigInt,
        remote_id -> BigInt,
        work_item_id -> BigInt,
        state -> Text,
        active -> Bool,
        attempts -> Integer,
        exit_status -> Nullable<Integer>,
        runtime -> Nullable<Double>,
        fault -> Integer,
        result -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    history (id) {
        id -> BigInt,
        remote_id -> Nullable<BigInt>,
        at -> Timestamp,
        host -> Text,
        pid -> Integer,
        tool -> Text,
        from_state -> Nullable<Text>,
        to_state -> Nullable<Text>,
        message -> Nullable<Text>,
        command -> Nullable<Text>,
    }
}

diesel::table! {
    control (tool) {
        tool -> Text,
        paused -> Bool,
        reason -> Nullable<Text>,
        changed_at -> Timestamp,
        changed_by -> Text,
    }
}

diesel::table! {
    leases (remote_id) {
        remote_id -> BigInt,
        tool -> Text,
        host -> Text,
        pid -> Integer,
        acquired_at -> Timestamp,
        heartbeat_at -> Timestamp,
    }
}

diesel::table! {
    results (seq) {
        seq -> BigInt,
        component_id -> BigInt,
        remote_id -> BigInt,
        work_item_id -> BigInt,
        attempt -> Integer,
        state -> Text,
        outputs -> Text,
        applied_at -> Timestamp,
    }
}

diesel::table! {
    consumers (name) {
        name -> Text,
        cursor -> BigInt,
        holder_host -> Nullable<Text>,
        holder_pid -> Nullable<Integer>,
        heartbeat_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    processes (id) {
        id -> BigInt,
        tool -> Text,
        host -> Text,
        pid -> Integer,
        started_at -> Timestamp,
        heartbeat_at -> Timestamp,
        command -> Nullable<Text>,
    }
}

diesel::table! {
    transfer_rates (id) {
        id -> BigInt,
        host -> Text,
        direction -> Text,
        bytes -> BigInt,
        seconds -> Double,
        at -> Timestamp,
    }
}

diesel::table! {
    remote_jobs (remote_id, job_id) {
        remote_id -> BigInt,
        job_id -> Text,
        attempt -> Integer,
        source -> Text,
        final_state -> Nullable<Text>,
        elapsed_s -> Nullable<BigInt>,
        alloc_cpus -> Nullable<BigInt>,
        cpu_s -> Nullable<Double>,
        nodes -> Nullable<BigInt>,
        req_nodes -> Nullable<BigInt>,
        timelimit_s -> Nullable<BigInt>,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    run_tallies (remote_id, state, active) {
        remote_id -> BigInt,
        state -> Text,
        active -> Bool,
        components -> BigInt,
        runtime -> Double,
    }
}

diesel::table! {
    result_hours (hour, remote_id) {
        hour -> Timestamp,
        remote_id -> BigInt,
        results -> BigInt,
    }
}

diesel::joinable!(run_tallies -> remote_runs (remote_id));
diesel::joinable!(remote_components -> remote_runs (remote_id));
diesel::joinable!(remote_jobs -> remote_runs (remote_id));
diesel::joinable!(remote_components -> work_items (work_item_id));
diesel::joinable!(leases -> remote_runs (remote_id));
diesel::joinable!(results -> remote_components (component_id));
diesel::joinable!(results -> work_items (work_item_id));

diesel::allow_tables_to_appear_in_same_query!(
    work_items,
    remote_runs,
    remote_components,
    history,
    control,
    leases,
    processes,
    transfer_rates,
    results,
    consumers,
    remote_jobs,
    run_tallies,
    result_hours,
);

diesel::allow_columns_to_appear_in_same_group_by_clause!(
    work_items::label,
    work_items::stage,
    remote_components::state,
);

diesel::allow_columns_to_appear_in_same_group_by_clause!(
    remote_runs::label,
    remote_runs::stage,
    run_tallies::state,
    run_tallies::active,
);

diesel::allow_columns_to_appear_in_same_group_by_clause!(
    remote_runs::label,
    remote_runs::stage,
    remote_components::state,
    remote_components::active,
);
