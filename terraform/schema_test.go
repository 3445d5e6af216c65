package terraform

import "strings"

// schema is the allow-list of one block: its attribute names and nested
// blocks. It is written by hand from the provider documentation (hashicorp/
// google 7.x, hashicorp/archive 2.x) for the types genimg uses, because the
// provider's own schema needs the terraform binary to read. A name missing
// here is either a typo or a type that needs adding: both deserve a look.
type schema struct {
	attrs  map[string]bool
	blocks map[string]schema
	// anyAttrs accepts every attribute name (locals, required_providers).
	anyAttrs bool
}

// s builds a schema from space-separated attribute names and nested blocks.
func s(attrs string, blocks map[string]schema) schema {
	sc := schema{attrs: map[string]bool{}, blocks: blocks}
	for _, a := range strings.Fields(attrs) {
		sc.attrs[a] = true
	}
	return sc
}

type blocks = map[string]schema

var (
	iamCondition = s("title description expression", nil)

	condition = s("condition error_message", nil)

	resourceLifecycle = s("create_before_destroy prevent_destroy ignore_changes replace_triggered_by", blocks{
		"precondition":  condition,
		"postcondition": condition,
	})

	timeouts = s("create update delete", nil)

	// Meta-arguments every resource and data source accepts.
	metaAttrs = "count for_each depends_on provider"
)

// iamMember is a google_*_iam_member resource with the given resource
// attributes.
func iamMember(attrs string) schema {
	return s(attrs+" role member "+metaAttrs, blocks{"condition": iamCondition, "lifecycle": resourceLifecycle})
}

// resource adds the meta-arguments to a resource schema.
func resource(attrs string, b blocks) schema {
	if b == nil {
		b = blocks{}
	}
	b["lifecycle"] = resourceLifecycle
	return s(attrs+" "+metaAttrs, b)
}

// resources is the allow-list by resource type.
var resources = map[string]schema{
	"google_cloudfunctions2_function": resource("name location project description labels kms_key_name", blocks{
		"build_config": s("runtime entry_point environment_variables docker_repository docker_registry service_account worker_pool", blocks{
			"source": s("", blocks{
				"storage_source": s("bucket object generation", nil),
				"repo_source":    s("project_id repo_name branch_name tag_name commit_sha dir invert_regex", nil),
			}),
			"automatic_update_policy": s("", nil),
			"on_deploy_update_policy": s("", nil),
		}),
		"service_config": s("max_instance_count min_instance_count available_memory available_cpu timeout_seconds "+
			"max_instance_request_concurrency environment_variables ingress_settings all_traffic_on_latest_revision "+
			"service_account_email vpc_connector vpc_connector_egress_settings binary_authorization_policy", blocks{
			"secret_environment_variables": s("key project_id secret version", nil),
			"secret_volumes": s("mount_path project_id secret", blocks{
				"versions": s("version path", nil),
			}),
		}),
		"event_trigger": s("trigger_region event_type pubsub_topic retry_policy service_account_email", blocks{
			"event_filters": s("attribute value operator", nil),
		}),
		"timeouts": timeouts,
	}),
	"google_storage_bucket": resource("name location project force_destroy storage_class uniform_bucket_level_access "+
		"public_access_prevention labels requester_pays default_event_based_hold enable_object_retention rpo", blocks{
		"lifecycle_rule": s("", blocks{
			"action": s("type storage_class", nil),
			"condition": s("age created_before with_state matches_storage_class matches_prefix matches_suffix "+
				"num_newer_versions custom_time_before days_since_custom_time days_since_noncurrent_time "+
				"noncurrent_time_before send_age_if_zero send_days_since_noncurrent_time_if_zero "+
				"send_days_since_custom_time_if_zero send_num_newer_versions_if_zero", nil),
		}),
		"versioning":             s("enabled", nil),
		"soft_delete_policy":     s("retention_duration_seconds", nil),
		"hierarchical_namespace": s("enabled", nil),
		"autoclass":              s("enabled terminal_storage_class", nil),
		"retention_policy":       s("is_locked retention_period", nil),
		"encryption":             s("default_kms_key_name", nil),
		"logging":                s("log_bucket log_object_prefix", nil),
		"timeouts":               timeouts,
	}),
	"google_storage_bucket_object": resource("name bucket source content content_type content_disposition "+
		"content_encoding content_language cache_control metadata storage_class detect_md5hash source_md5hash "+
		"kms_key_name event_based_hold temporary_hold", nil),
	"google_storage_notification": resource("bucket payload_format topic event_types object_name_prefix custom_attributes", nil),
	"google_pubsub_topic": resource("name project labels kms_key_name message_retention_duration", blocks{
		"message_storage_policy": s("allowed_persistence_regions enforce_in_transit", nil),
		"schema_settings":        s("schema encoding", nil),
	}),
	"google_pubsub_subscription": resource("name topic project labels ack_deadline_seconds message_retention_duration "+
		"retain_acked_messages enable_message_ordering filter enable_exactly_once_delivery", blocks{
		"push_config": s("push_endpoint attributes", blocks{
			"oidc_token": s("service_account_email audience", nil),
			"no_wrapper": s("write_metadata", nil),
		}),
		"retry_policy":       s("minimum_backoff maximum_backoff", nil),
		"dead_letter_policy": s("dead_letter_topic max_delivery_attempts", nil),
		"expiration_policy":  s("ttl", nil),
	}),
	"google_service_account": resource("account_id display_name description project disabled create_ignore_already_exists", nil),
	"google_secret_manager_secret": resource("secret_id project labels annotations version_aliases ttl expire_time "+
		"version_destroy_ttl deletion_protection", blocks{
		"replication": s("", blocks{
			"auto": s("", blocks{"customer_managed_encryption": s("kms_key_name", nil)}),
			"user_managed": s("", blocks{"replicas": s("location", blocks{
				"customer_managed_encryption": s("kms_key_name", nil),
			})}),
		}),
		"rotation": s("next_rotation_time rotation_period", nil),
		"topics":   s("name", nil),
	}),
	"google_storage_bucket_iam_member":           iamMember("bucket"),
	"google_pubsub_topic_iam_member":             iamMember("project topic"),
	"google_pubsub_subscription_iam_member":      iamMember("project subscription"),
	"google_project_iam_member":                  iamMember("project"),
	"google_service_account_iam_member":          iamMember("service_account_id"),
	"google_secret_manager_secret_iam_member":    iamMember("project secret_id"),
	"google_cloud_run_v2_service_iam_member":     iamMember("project location name"),
	"google_cloudfunctions2_function_iam_member": iamMember("project location cloud_function"),
	"google_logging_metric": resource("name project description filter disabled bucket_name value_extractor label_extractors", blocks{
		"metric_descriptor": s("metric_kind value_type unit display_name", blocks{
			"labels": s("key value_type description", nil),
		}),
		"bucket_options": s("", blocks{
			"linear_buckets":      s("num_finite_buckets width offset", nil),
			"exponential_buckets": s("num_finite_buckets growth_factor scale", nil),
			"explicit_buckets":    s("bounds", nil),
		}),
	}),
	"google_monitoring_alert_policy": resource("display_name combiner enabled notification_channels project severity user_labels", blocks{
		"conditions": s("display_name", blocks{
			"condition_threshold": s("filter duration comparison threshold_value denominator_filter evaluation_missing_data", blocks{
				"aggregations":             s("alignment_period per_series_aligner cross_series_reducer group_by_fields", nil),
				"denominator_aggregations": s("alignment_period per_series_aligner cross_series_reducer group_by_fields", nil),
				"trigger":                  s("count percent", nil),
				"forecast_options":         s("forecast_horizon", nil),
			}),
			"condition_absent": s("filter duration", blocks{
				"aggregations": s("alignment_period per_series_aligner cross_series_reducer group_by_fields", nil),
				"trigger":      s("count percent", nil),
			}),
			"condition_matched_log": s("filter label_extractors", nil),
			"condition_prometheus_query_language": s("query duration evaluation_interval labels rule_group alert_rule "+
				"disable_metric_validation", nil),
		}),
		"documentation": s("content mime_type subject", blocks{"links": s("display_name url", nil)}),
		"alert_strategy": s("auto_close notification_prompts", blocks{
			"notification_rate_limit":       s("period", nil),
			"notification_channel_strategy": s("notification_channel_names renotify_interval", nil),
		}),
	}),
	"google_monitoring_dashboard": resource("dashboard_json project", nil),
	"google_cloud_scheduler_job": resource("name project region description schedule time_zone paused attempt_deadline", blocks{
		"retry_config":  s("retry_count max_retry_duration min_backoff_duration max_backoff_duration max_doublings", nil),
		"pubsub_target": s("topic_name data attributes", nil),
		"app_engine_http_target": s("http_method body headers relative_uri", blocks{
			"app_engine_routing": s("service version instance", nil),
		}),
		"http_target": s("uri http_method body headers", blocks{
			"oauth_token": s("service_account_email scope", nil),
			"oidc_token":  s("service_account_email audience", nil),
		}),
		"timeouts": timeouts,
	}),
}

// dataSources is the allow-list by data source type.
var dataSources = map[string]schema{
	"google_project":                         resource("project_id", nil),
	"google_storage_project_service_account": resource("project user_project", nil),
	"archive_file": resource("type source_dir source_file source_content source_content_filename output_path "+
		"output_file_mode excludes exclude_symlink_directories", blocks{
		"source": s("content filename", nil),
	}),
}

// topLevel is the allow-list of the other top-level blocks.
var topLevel = map[string]schema{
	"terraform": s("required_version", blocks{
		"required_providers": {anyAttrs: true},
		"backend":            {anyAttrs: true},
	}),
	"provider": s("alias project region zone credentials access_token impersonate_service_account "+
		"user_project_override billing_project request_timeout default_labels add_terraform_attribution_label", nil),
	"variable": s("description type default sensitive nullable ephemeral", blocks{"validation": condition}),
	"output":   s("description value sensitive depends_on ephemeral", blocks{"precondition": condition}),
	"locals":   {anyAttrs: true},
}
