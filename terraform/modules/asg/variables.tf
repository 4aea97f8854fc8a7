# Inputs of the scale-api autoscaling group module. `scalectl render` writes a root module that sets
# every one of them from the topology's `autoscaling` section.

variable "name" {
  description = "Topology name; prefixes every resource."
  type        = string
}

variable "instance_type" {
  type = string
}

variable "ami" {
  description = "A Debian 12 AMI with cloud-init."
  type        = string
}

variable "vpc_id" {
  type = string
}

variable "subnets" {
  description = "At least two subnets in different availability zones."
  type        = list(string)
}

variable "min_size" {
  type = number
}

variable "max_size" {
  type = number
}

variable "desired_capacity" {
  type = number
}

variable "scaling_policy" {
  description = "target_tracking (keep average CPU near cpu_scale_out) or step (out above cpu_scale_out, in below cpu_scale_in)."
  type        = string
  default     = "target_tracking"
  validation {
    condition     = contains(["target_tracking", "step"], var.scaling_policy)
    error_message = "scaling_policy must be target_tracking or step."
  }
}

variable "cpu_scale_out" {
  description = "Average CPU percent above which the group adds an instance (commonly 70)."
  type        = number
  default     = 70
}

variable "cpu_scale_in" {
  description = "Average CPU percent below which the group removes an instance (commonly 30)."
  type        = number
  default     = 30
}

variable "scale_out_cooldown" {
  type    = number
  default = 60
}

variable "scale_in_cooldown" {
  type    = number
  default = 120
}

variable "health_check_grace_period" {
  type    = number
  default = 120
}

variable "min_healthy_percentage" {
  type    = number
  default = 90
}

variable "app_port" {
  type    = number
  default = 3000
}

variable "instances" {
  description = "scale-api instances per machine: a number, or \"max\" for one per core."
  type        = string
  default     = "max"
}

variable "readiness_path" {
  type    = string
  default = "/readyz"
}

variable "unit_file" {
  description = "The APP@.service unit rendered by scalectl."
  type        = string
}

variable "socket_file" {
  description = "The scale-api@.socket unit rendered by scalectl (it holds the port across restarts); unused for a program."
  type        = string
  default     = ""
}

variable "log_ship_file" {
  description = "The rsyslog shipping config rendered by scalectl (RELP to the fleet's collector, disk-assisted queue)."
  type        = string
}

variable "env_file" {
  description = "The APP.env file rendered by scalectl."
  type        = string
}

variable "release_url" {
  description = "Where instances download the release at boot (an HTTPS URL, such as an S3 presigned one): scale-api's binary, or the program's tar from `scalectl pack`."
  type        = string

  validation {
    condition     = can(regex("^https?://[A-Za-z0-9._~:/?#@!&+,;=%-]+$", var.release_url))
    error_message = "release_url must be an http:// or https:// URL without spaces, quotes or other characters a URL escapes (percent-encode them)."
  }
}

variable "unpack_script" {
  description = "scalectl's script that unpacks a program's release (files/unpack-release.sh); unused for scale-api."
  type        = string
  default     = ""
}

variable "release_sha256" {
  description = "The release's sha256 (64 hex digits): instances install it only if the download matches."
  type        = string
}

variable "redis_password" {
  description = "The fleet's Redis password, written to /etc/APP/secrets.env (0600) on each instance. It is in the user data and the state: keep both private."
  type        = string
  default     = ""
  sensitive   = true
}

variable "app_name" {
  description = "The app's name: units APP@PORT.service, /etc/APP, /opt/APP."
  type        = string
  default     = "scale-api"
}

variable "program" {
  description = "The user's program (a tar unpacked into the release directory, no socket units) rather than scale-api's binary."
  type        = bool
  default     = false
}

variable "packages" {
  description = "Debian packages the program needs (app.program.packages), installed at boot."
  type        = list(string)
  default     = []
}

variable "redis_port" {
  description = "Port of the fleet's Redis, which instances reach."
  type        = number
  default     = 6379
}

variable "relp_port" {
  description = "Port of the fleet's log collector (RELP)."
  type        = number
  default     = 2514
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on the load balancer; HTTP then redirects to HTTPS. Empty: HTTP only."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion (turn off before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "access_logs_bucket" {
  description = "S3 bucket for the load balancer's access logs. Empty: no access logs."
  type        = string
  default     = ""
}

variable "web_acl_arn" {
  description = "WAFv2 web ACL to attach to the load balancer. Empty: none."
  type        = string
  default     = ""
}
