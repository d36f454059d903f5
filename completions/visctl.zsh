#compdef visctl

_visctl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _VISCTL_COMPLETE=complete_zsh visctl)
}

compdef _visctl_completion visctl
