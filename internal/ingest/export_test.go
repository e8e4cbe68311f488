package ingest

// Queued returns how many requests wait for the manifest commit of dataset
// (those of a commit in flight not counted), for tests that build a group.
func (s *Service) Queued(dataset string) int {
	s.committer.mu.Lock()
	defer s.committer.mu.Unlock()
	return len(s.committer.queues[dataset])
}
