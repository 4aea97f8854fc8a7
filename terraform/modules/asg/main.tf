# The app (scale-api, or the user's program) on an autoscaling group: every instance boots Debian,
# cloud-init writes the same systemd units scalectl installs on app hosts (plus the node exporter and
# the log shipper), installs the release after checking its sha256, and the group
# scales on average CPU (target tracking at cpu_scale_out, or step: out above cpu_scale_out, in below
# cpu_scale_in) behind an application load balancer that health-checks the readiness path.

locals {
  instance_count = var.instances == "max" ? "$(nproc)" : var.instances
  # scale-api keeps its port in a socket unit; the user's program (var.program) binds its own.
  units = var.program ? "${var.app_name}@$p.service" : "${var.app_name}@$p.socket ${var.app_name}@$p.service"
  secrets_env = var.redis_password == "" ? "" : "REDIS_PASSWORD=${jsonencode(var.redis_password)}\n"
  user_data = <<-CLOUDINIT
    #cloud-config
    package_update: true
    packages: ${jsonencode(concat(["prometheus-node-exporter", "rsyslog", "rsyslog-relp", "curl"], var.packages))}
    write_files:
      - path: /etc/systemd/system/${var.app_name}@.service
        permissions: "0644"
        encoding: b64
        content: ${base64encode(var.unit_file)}
    %{~ if !var.program }
      - path: /etc/systemd/system/${var.app_name}@.socket
        permissions: "0644"
        encoding: b64
        content: ${base64encode(var.socket_file)}
    %{~ endif }
      - path: /etc/${var.app_name}/${var.app_name}.env
        permissions: "0640"
        encoding: b64
        content: ${base64encode(var.env_file)}
      # Secrets: the Redis password (a sensitive variable, never in a rendered file), readable by root only.
      - path: /etc/${var.app_name}/secrets.env
        permissions: "0600"
        encoding: b64
        content: ${base64encode(local.secrets_env)}
      - path: /etc/rsyslog.d/60-scalectl-ship.conf
        permissions: "0644"
        encoding: b64
        content: ${base64encode(var.log_ship_file)}
      # Where the release is downloaded from: read by curl from this file, never interpolated
      # into a shell command line.
      - path: /etc/scalectl/release-url
        permissions: "0600"
        encoding: b64
        content: ${base64encode(var.release_url)}
    %{~ if var.program }
      # scalectl's own unpack script, as apply and the Ansible role run it: tar runs as nobody
      # (no device node, no owner of the release's choosing), and only files, directories and
      # links that stay inside the release are kept.
      - path: /usr/local/lib/scalectl/unpack-release.sh
        permissions: "0755"
        encoding: b64
        content: ${base64encode(var.unpack_script)}
    %{~ endif }
      # Nothing outside an instance scrapes its node exporter (the group scales on CloudWatch's
      # CPU): loopback only, never every interface.
      - path: /etc/default/prometheus-node-exporter
        permissions: "0644"
        content: |
          ARGS="--web.listen-address=127.0.0.1:9100"
    runcmd:
      # The release is downloaded, checked against its sha256 and installed, or nothing is: an
      # instance without a verified release fails its health check and the group replaces it.
      - [sh, -c, "set -e; d=/opt/${var.app_name}/releases/boot; r=$d.download; mkdir -p /opt/${var.app_name}/releases; rm -rf $d $r; curl -fsSL --url \"$(cat /etc/scalectl/release-url)\" -o $r; echo '${var.release_sha256}  '$r | sha256sum -c -; mkdir -p $d; ${var.program ? "sh /usr/local/lib/scalectl/unpack-release.sh $r $d" : "install -m 0755 $r $d/scale-api"}; rm -f $r; ln -sfn $d /opt/${var.app_name}/current"]
      - systemctl daemon-reload
      - systemctl restart rsyslog prometheus-node-exporter
      - [sh, -c, "for i in $(seq 0 $((${local.instance_count} - 1))); do p=$((${var.app_port} + i)); systemctl enable --now ${local.units}; done"]
  CLOUDINIT
}

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "HTTP and HTTPS into the load balancer"
  vpc_id      = var.vpc_id

  # checkov:skip=CKV_AWS_260: a public load balancer takes HTTP from anywhere; with certificate_arn set it only redirects to HTTPS
  ingress {
    description = "HTTP from anywhere (redirected to HTTPS when a certificate is set)"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "HTTPS from anywhere"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "To the app instances"
    from_port   = var.app_port
    to_port     = var.app_port + 255
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "app" {
  name_prefix = "${var.name}-app-"
  description = "The app's instances, reachable from the load balancer only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "The app from the load balancer"
    from_port       = var.app_port
    to_port         = var.app_port + 255
    protocol        = "tcp"
    security_groups = [aws_security_group.lb.id]
  }

  # Only what an instance talks to: package mirrors and the release (HTTP/HTTPS), Redis, the log collector.
  egress {
    description = "Package mirrors and the release download over HTTP"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Package mirrors and the release download over HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Redis"
    from_port   = var.redis_port
    to_port     = var.redis_port
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Log collector (RELP)"
    from_port   = var.relp_port
    to_port     = var.relp_port
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_launch_template" "this" {
  name_prefix   = "${var.name}-"
  image_id      = var.ami
  instance_type = var.instance_type
  user_data     = base64encode(local.user_data)

  lifecycle {
    precondition {
      condition     = can(regex("^[0-9a-f]{64}$", var.release_sha256)) && var.release_url != ""
      error_message = "Set release_url and release_sha256 (the release's sha256, 64 hex digits: `sha256sum` of the binary or of the tar from `scalectl pack`): instances install only a release that matches it."
    }
  }

  vpc_security_group_ids = [aws_security_group.app.id]

  # IMDSv2 only, and its answers never leave the instance (one hop): a container or a forwarded
  # request on the instance cannot fetch the user data, which holds the Redis password.
  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name              = "${var.name}-app"
      "scalectl:topology" = var.name
    }
  }
}

resource "aws_lb" "this" {
  # checkov:skip=CKV2_AWS_76: the rules of a web ACL passed in are the user's (include AWSManagedRulesKnownBadInputsRuleSet)
  # checkov:skip=CKV2_AWS_28: WAF is an account-wide choice; pass web_acl_arn to attach one (aws_wafv2_web_acl_association below)
  # checkov:skip=CKV2_AWS_20: HTTP redirects to HTTPS whenever certificate_arn is set; without a certificate there is nothing to redirect to
  name                       = substr("${var.name}-lb", 0, 32)
  load_balancer_type         = "application"
  subnets                    = var.subnets
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection

  # checkov:skip=CKV_AWS_91: access logs need a bucket the user owns; set access_logs_bucket to turn them on
  dynamic "access_logs" {
    for_each = var.access_logs_bucket == "" ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_wafv2_web_acl_association" "lb" {
  count        = var.web_acl_arn == "" ? 0 : 1
  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_lb_target_group" "app" {
  # checkov:skip=CKV_AWS_378: TLS ends at the load balancer; scale-api speaks HTTP on the private network
  name_prefix = "sa-"
  port        = var.app_port
  protocol    = "HTTP"
  vpc_id      = var.vpc_id

  health_check {
    path                = var.readiness_path
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

# HTTPS when a certificate is given (TLS 1.2 and 1.3 only); HTTP then only redirects to it.
resource "aws_lb_listener" "https" {
  count             = var.certificate_arn == "" ? 0 : 1
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
}

resource "aws_lb_listener" "http" {
  # checkov:skip=CKV_AWS_2: without certificate_arn the module can only serve HTTP; with it this listener only redirects
  # checkov:skip=CKV_AWS_103: TLS policy applies to the HTTPS listener above; this one carries no TLS
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = var.certificate_arn == "" ? "forward" : "redirect"
    target_group_arn = var.certificate_arn == "" ? aws_lb_target_group.app.arn : null

    dynamic "redirect" {
      for_each = var.certificate_arn == "" ? [] : [1]
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_autoscaling_group" "this" {
  name_prefix               = "${var.name}-"
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  vpc_zone_identifier       = var.subnets
  target_group_arns         = [aws_lb_target_group.app.arn]
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.min_healthy_percentage
    }
  }

  tag {
    key                 = "scalectl:topology"
    value               = var.name
    propagate_at_launch = true
  }
}

# Target tracking (default): AWS adds instances while average CPU is above cpu_scale_out and removes
# them when it stays well below (AWS picks the scale-in margin; cpu_scale_in is not used).
resource "aws_autoscaling_policy" "cpu_target" {
  count                     = var.scaling_policy == "target_tracking" ? 1 : 0
  name                      = "${var.name}-cpu-target"
  autoscaling_group_name    = aws_autoscaling_group.this.name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = var.health_check_grace_period

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
    target_value     = var.cpu_scale_out
    disable_scale_in = false
  }
}

# Step (exactly two thresholds, out above 70% and in below 30% by default): one more instance when average CPU stays above
# cpu_scale_out, one fewer when it stays below cpu_scale_in.
resource "aws_autoscaling_policy" "out" {
  count                  = var.scaling_policy == "step" ? 1 : 0
  name                   = "${var.name}-cpu-out"
  autoscaling_group_name = aws_autoscaling_group.this.name
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = 1
  cooldown               = var.scale_out_cooldown
}

resource "aws_cloudwatch_metric_alarm" "cpu_high" {
  count               = var.scaling_policy == "step" ? 1 : 0
  alarm_name          = "${var.name}-cpu-high"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.cpu_scale_out
  alarm_actions       = [aws_autoscaling_policy.out[0].arn]
  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}

resource "aws_autoscaling_policy" "in" {
  count                  = var.scaling_policy == "step" ? 1 : 0
  name                   = "${var.name}-cpu-in"
  autoscaling_group_name = aws_autoscaling_group.this.name
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = -1
  cooldown               = var.scale_in_cooldown
}

resource "aws_cloudwatch_metric_alarm" "cpu_low" {
  count               = var.scaling_policy == "step" ? 1 : 0
  alarm_name          = "${var.name}-cpu-low"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  comparison_operator = "LessThanThreshold"
  threshold           = var.cpu_scale_in
  alarm_actions       = [aws_autoscaling_policy.in[0].arn]
  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}
