package deploy

import (
	"debug/elf"
	"fmt"
)

// CheckStatic reports whether the ELF binary at path is statically linked:
// no program interpreter (PT_INTERP) and no shared libraries (DT_NEEDED),
// so it runs on distroless/static or scratch, which have no libc.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("static check: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("static check: %s has a PT_INTERP program header: dynamically linked", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("static check: %s: %w", path, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("static check: %s needs shared libraries %v", path, libs)
	}
	return nil
}
