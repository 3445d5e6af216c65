# tflint with its built-in Terraform rules only (no provider plugins, which
# would need a download): run from the module root with
#   go run github.com/terraform-linters/tflint@v0.64.0 --chdir=terraform
plugin "terraform" {
  enabled = true
  preset  = "all"
}
