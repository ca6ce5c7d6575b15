/* SPDX-License-Identifier: MIT */
/* test_list.h - every unit test, in the order they run. */
#define TEST_LIST(X)                                                                               \
    X(buf_append_and_cap)                                                                          \
    X(line_reader_splits_across_chunks)                                                            \
    X(line_reader_drops_overlong_lines)                                                            \
    X(line_reader_stops_when_asked)                                                                \
    X(names_random_and_valid)                                                                      \
    X(names_alphabet_is_uniform_enough)                                                            \
    X(tokens_base64url)                                                                            \
    X(net_addresses)                                                                               \
    X(json_sorted_copy_sorts_nested_keys)                                                          \
    X(proto_parse_requests)                                                                        \
    X(proto_parse_responses_and_events)                                                            \
    X(proto_rejects_bad_lines)                                                                     \
    X(proto_encode_matches_plane_shapes)                                                           \
    X(proto_round_trip)                                                                            \
    X(mock_spawn_ready_http_and_soft_terminate)                                                    \
    X(mock_hard_terminate_and_ignored_soft)                                                        \
    X(mock_hooks_fail_each_step)                                                                   \
    X(mock_never_ready_times_out)                                                                  \
    X(mock_exits_on_its_own)                                                                       \
    X(mock_terminate_during_prepare_spawn_and_wait)                                                \
    X(mock_exit_during_terminate)                                                                  \
    X(mock_cancel_wait_and_close_with_ops_in_flight)                                               \
    X(mock_duplicate_spawn_and_bad_ids) \
    X(process_spawn_env_ready_http_soft_terminate) \
    X(process_hard_terminate_and_grace_period) \
    X(process_exits_on_its_own_with_code) \
    X(process_never_ready_and_exit_while_waiting) \
    X(process_bad_executables) \
    X(process_group_dies_with_backend) \
    X(process_memory_limit_uses_cgroup) \
    X(process_metrics_events) \
    X(process_leftovers_of_a_killed_drone_are_reaped) \
    X(process_terminate_during_wait_and_exit_during_terminate)                                      \
    X(process_same_id_again_after_exit)                                                            \
    X(process_close_kills_every_backend) \
    X(executor_client_full_cycle) \
    X(executor_client_queues_until_the_server_appears) \
    X(executor_client_survives_a_server_restart) \
    X(executor_client_rejects_wrong_answers)
