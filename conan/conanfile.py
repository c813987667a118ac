"""Conan 2 recipe for stem, a header-only C++20 library.

The recipe sits in conan/, one level below the sources, so it exports them
from its parent directory. From the repository root:

    conan create conan/ --build=missing
"""

import os

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy

required_conan_version = ">=2.0"


class StemConan(ConanFile):
    name = "stem"
    version = "0.1.0"
    package_type = "header-library"
    license = "MIT"
    description = "Typed background tasks for C++20 services, on Boost.Asio coroutines"
    topics = ("tasks", "jobs", "queue", "asio", "coroutines", "header-only")
    # Settings are only read by validate(); package_id() drops them, so every
    # configuration shares one package.
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    @property
    def _root(self):
        return os.path.join(self.recipe_folder, os.pardir)

    def export_sources(self):
        for pattern in ("include/*", "cmake/*", "CMakeLists.txt", "LICENSE"):
            copy(self, pattern, src=self._root, dst=self.export_sources_folder)

    def requirements(self):
        # Headers of stem include Boost and fmt headers: consumers need them too.
        self.requires("boost/1.81.0", transitive_headers=True)
        self.requires("fmt/[>=9.1 <11]", transitive_headers=True)

    def validate(self):
        check_min_cppstd(self, 20)

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", src=self.source_folder,
             dst=os.path.join(self.package_folder, "licenses"))
        copy(self, "*", src=os.path.join(self.source_folder, "include"),
             dst=os.path.join(self.package_folder, "include"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "stem")
        self.cpp_info.set_property("cmake_target_name", "stem::core")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.defines = ["BOOST_ASIO_NO_DEPRECATED"]
        self.cpp_info.requires = ["boost::headers", "boost::json", "fmt::fmt"]
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
